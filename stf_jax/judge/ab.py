"""The A/B behaviour protocol of Contrastive Activation Addition: does steering move the model's *choice*?

Items are multiple-choice questions with lettered choices; one letter shows the behaviour. In the pair form
stf_jax's A/B set uses (and CAA-style datasets use), `positive` is the question ending "Answer: (A)" with the
behaviour-matching letter and `negative` the same text with the other letter; the raw CAA form
{"question", "answer_matching_behavior": "(A)", "answer_not_matching_behavior": "(B)"} is read too
(`read_ab_items`). Vectors come from an extraction run of the items (`python -m stf_jax.extract --pairs ab
--pooling letter`: the residual stream at the answer letter, CAA's position; `last` reads the ")" after it).

Evaluation, per directed model pair and steered layer pair, on the held-out items of the run's split (the
vectors and maps never saw them): the target model reads each question up to "Answer: (" with the
condition's vector added at every token at a × typical |h| of the layer (a on a grid of both signs), and
the probability of the behaviour-matching letter among the item's choice letters is read at the next
token. Conditions: native (the target's own vector from the train items), each transfer method (carried
leave-one-behaviour-out, `steer.evaluate.condition_vectors`) and the random / shuffled controls. Per
behaviour and condition: the mean matching-letter probability at each strength, the slope over strength
(per item, bootstrap over items) and its ratio to native; pooled over behaviours too. The blocks below the
steered layer run once for every item; each (condition, strength) reruns only the blocks above it, with a
vector per row, so one pass covers every behaviour.
"""

from __future__ import annotations

import dataclasses
import time
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..transfer.carry_settings import CarrySettings
from ..core.chat import chat_text
from ..core.stats import format_ci, interval, resample_indices, slopes
from ..data.ab import ABItem, ABItemError, ab_form, item_from_pair, read_ab_items  # noqa: F401  (the protocol's API)
from ..options import check_options, option


@dataclasses.dataclass(frozen=True)
class ABConfig:
    """strengths: a × typical |h| of the steered layer (0 added if missing); behaviours: a subset (None: all
    in the run); methods / controls / carry: as in `steer.evaluate.SteerConfig`."""

    strengths: tuple[float, ...] = option((-0.5, -0.25, 0.0, 0.25, 0.5), ge=-10.0, le=10.0)
    behaviours: tuple[str, ...] | None = None
    methods: tuple[str, ...] = ("affine", "procrustes", "linear")
    controls: tuple[str, ...] = ("random", "shuffled")
    bootstrap: int = option(1000, ge=100)
    seed: int = option(0, ge=0)
    carry: CarrySettings = CarrySettings()

    def __post_init__(self):
        check_options(self)


# ------------------------------------------------------------------ scoring


def _letter_logprobs_fn():
    import jax
    import jax.numpy as jnp

    from ..models import decoder

    @partial(jax.jit, static_argnames=("cfg", "start", "dtype"))
    def run(params, h, ids, mask, head_index, letter_ids, *, cfg, start: int, dtype):
        """log P(each letter) at head_index, running blocks start.. on h [B, S, D]: [B, K]."""
        logits = decoder.logits_from(params, h, ids, mask, cfg=cfg, start=start, dtype=dtype,
                                     head_index=head_index)  # [B, 1, V]
        logp = jax.nn.log_softmax(logits[:, 0].astype(jnp.float32), axis=-1)
        return jnp.take_along_axis(logp, letter_ids, axis=-1)

    return run


class LetterScorer:
    """P(matching letter | question, steering at `layer`) for many row vectors; the blocks below the layer run
    once. Items may list different letters; probabilities are over each item's own letters. `chat`: the items
    are read inside the model's chat template (chat-form items, from a run extracted with --chat-template),
    the answer's "(" opening the assistant's turn."""

    def __init__(self, model, layer: int, items: Sequence[ABItem], chat: bool = False):
        import jax.numpy as jnp

        from ..core.norms import residual_norms
        from ..models import decoder
        from ..steer.propensity import steered_layer

        layer = steered_layer(model, layer)
        tok = model.tokenizer
        rows, letter_ids = [], []
        k = max(len(it.letters) for it in items)
        def encode(it: ABItem, letter: str = "") -> list[int]:
            if chat:
                return tok(chat_text(tok, it.user, it.answer_prefix + letter, open_answer=True),
                           add_special_tokens=False)["input_ids"]
            return tok(it.prompt + letter, add_special_tokens=True)["input_ids"]

        if chat and any(it.user is None for it in items):
            raise ABItemError("chat=True needs chat-form items (the question as the pair's prompt; "
                              "load_pairs('ab-chat'))")
        for it in items:
            ids = encode(it)
            lids = []
            for letter in it.letters:
                whole = encode(it, letter)
                if whole[:len(ids)] != ids or len(whole) != len(ids) + 1:
                    raise ABItemError(f"A/B item {it.id!r}: this tokenizer does not read the answer letter {letter!r} "
                                      "as one token after '(' (the letter-position protocol needs it)")
                lids.append(whole[-1])
            rows.append(ids)
            letter_ids.append(lids + [lids[0]] * (k - len(lids)))  # padded letters repeat one: masked below
        self.valid = np.array([[j < len(it.letters) for j in range(k)] for it in items])
        self.match = np.array([it.letters.index(it.matching) for it in items])
        width = int(np.ceil(max(map(len, rows)) / 16) * 16)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        ids = np.full((len(rows), width), pad, np.int32)
        mask = np.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, :len(r)], mask[i, :len(r)] = r, 1
        self.model, self.layer = model, layer
        self.ids, self.mask = jnp.asarray(ids), jnp.asarray(mask)
        self.head = jnp.asarray(np.array([[len(r) - 1] for r in rows], np.int32))
        self.letter_ids = jnp.asarray(np.array(letter_ids, np.int32))
        self.h = decoder.hidden_states(model.params, self.ids, self.mask, cfg=model.config, layers=(layer,),
                                       dtype=model.dtype)[0]  # [B, S, D]
        total, count = residual_norms(np.asarray(self.h), np.asarray(mask))
        self.typical_norm = total / max(count, 1)
        self._run = _letter_logprobs_fn()

    def p_match(self, row_vectors: np.ndarray | None = None) -> np.ndarray:
        """[B] probability of each item's matching letter among its letters, with row_vectors [B, D] (already
        scaled) added at every real token of the layer."""
        import jax.numpy as jnp

        h = self.h
        if row_vectors is not None:
            h = h + jnp.asarray(row_vectors, h.dtype)[:, None, :] * self.mask.astype(h.dtype)[..., None]
        lp = np.asarray(self._run(self.model.params, h, self.ids, self.mask, self.head, self.letter_ids,
                                  cfg=self.model.config, start=self.layer, dtype=self.model.dtype), np.float64)
        lp = np.where(self.valid, lp, -np.inf)
        p = np.exp(lp - lp.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        return p[np.arange(len(p)), self.match]


# ------------------------------------------------------------------ the protocol


def evaluate_ab(run_dir: str | Path, cfg: ABConfig = ABConfig(), layers: dict | None = None, layer: int | str = -6,
                directions: Sequence[tuple[str, str]] | None = None, log=print) -> dict[str, Any]:
    """The A/B protocol over the directed model pairs of an extraction run of A/B items (module docstring)."""
    from ..extract.rundir import AlignInputError, find_models, pair_table
    from ..extract.store import read_manifest
    from ..models.loading import load_model
    from ..steer.evaluate import SteerConfig, direction_conditions

    t_start = time.perf_counter()
    refs = find_models([run_dir])
    names = sorted(refs)
    # a one-model run: the model's own vectors and the controls (nothing to carry)
    directions = list(directions or [(s, t) for s in names for t in names if s != t] or [(names[0], names[0])])
    table, orders = pair_table([refs[m] for m in names])
    items_all = [item_from_pair(p) for p in table.pairs]
    chat = bool(read_manifest(run_dir).get("chat_template"))
    if any(it.user is not None for it in items_all) != chat:
        raise AlignInputError(
            f"{run_dir}: chat-form A/B items (the question as each pair's prompt) need --chat-template at extraction"
            if not chat else f"{run_dir} was extracted with --chat-template from plain A/B items, so each answer is "
            "inside the user's turn; extract --pairs ab-chat (or ab_form(items, 'chat')) instead")
    behaviours = list(cfg.behaviours or table.trait_names)
    missing = sorted(set(behaviours) - set(table.trait_names))
    if missing:
        raise AlignInputError(f"behaviour(s) {missing} are not in {run_dir}; it has {list(table.trait_names)}")
    strengths = np.unique(np.asarray(list(cfg.strengths) + [0.0], np.float64))
    scfg = SteerConfig(methods=cfg.methods, controls=cfg.controls, seed=cfg.seed, traits=tuple(behaviours),
                       carry=cfg.carry)
    results: dict[str, Any] = {"run_dir": str(run_dir), "config": dataclasses.asdict(cfg),
                               "strengths": strengths.tolist(), "behaviours": behaviours, "directions": []}
    models: dict[str, Any] = {}
    for s_name, t_name in directions:
        t0 = time.perf_counter()
        own = dataclasses.replace(scfg, methods=()) if s_name == t_name else scfg
        ls, lt, conds, notes, trials = direction_conditions(refs, orders, table, s_name, t_name, layers, layer, own,
                                                            behaviours)
        test = [i for i in np.nonzero(trials.test[0])[0] if items_all[i].behaviour in behaviours]
        items = [items_all[i] for i in test]
        if t_name not in models:
            models[t_name] = load_model(t_name)
        scorer = LetterScorer(models[t_name], lt, items, chat=chat)
        entry = _direction(scorer, items, conds, strengths, cfg)
        entry.update(source=s_name, target=t_name, chat_template=chat, layer_source=int(ls), layer_target=int(lt), n_test_items=len(items),
                     typical_norm=scorer.typical_norm, cosine_to_native=notes["cosine_to_native"],
                     seconds=time.perf_counter() - t0)
        log(f"{s_name}->{t_name} (layers {ls}->{lt}, {len(items)} held-out items): pooled slope native "
            f"{format_ci(entry['pooled']['native']['slope'], 3)}" + "".join(
                f", {c} {format_ci(entry['pooled'][c]['slope'], 3)}" for c in conds if c != "native")
            + f" ({entry['seconds']:.0f}s)")
        results["directions"].append(entry)
    results["seconds"] = time.perf_counter() - t_start
    return results


def _direction(scorer: LetterScorer, items: Sequence[ABItem], conds: dict, strengths: np.ndarray,
               cfg: ABConfig) -> dict[str, Any]:
    """curves[c]: [A, n_items] matching-letter probabilities; statistics per behaviour and pooled."""
    beh = np.array([it.behaviour for it in items])
    base = scorer.p_match()
    curves = {}
    for c, vecs in conds.items():
        rows = np.stack([np.asarray(vecs[b], np.float32) for b in beh]) * np.float32(scorer.typical_norm)
        curves[c] = np.stack([base if a == 0 else scorer.p_match(rows * np.float32(a)) for a in strengths])
    slope = {c: slopes(strengths, cv) for c, cv in curves.items()}  # [n_items]

    def stats(mask: np.ndarray) -> dict[str, Any]:
        """Items resampled (within behaviour for the pooled rows), jointly for every condition and native."""
        out = {}
        rows = np.nonzero(mask)[0]
        local = resample_indices(len(rows), cfg.bootstrap, cfg.seed, groups=beh[rows])
        for c in curves:
            s = slope[c][rows]
            sn = slope["native"][rows]
            boot_ratio = s[local].mean(1) / sn[local].mean(1)
            out[c] = {"p": curves[c][:, rows].mean(1).tolist(),
                      "slope": interval(s[local].mean(1), float(s.mean())),
                      "ratio_to_native": interval(boot_ratio, float(s.mean() / sn.mean()) if sn.mean() else float("nan"))}
        return out

    per = {b: stats(beh == b) for b in dict.fromkeys(beh)}
    return {"per_behaviour": per, "pooled": stats(np.ones(len(items), bool)),
            "curves": {c: cv.tolist() for c, cv in curves.items()}, "items": [it.id for it in items]}


# ------------------------------------------------------------------ output


def markdown(results: dict[str, Any]) -> str:
    a = results["strengths"]
    lines = ["# A/B behaviour protocol (Contrastive Activation Addition)", "",
             "Probability of the behaviour-matching letter among the item's choices on held-out items, with the "
             "vector added at a × typical |h| of the steered layer; slope per unit a with a 95% bootstrap "
             "interval over items; ratio = slope / native slope.", ""]
    for d in results["directions"]:
        lines += [f"## {d['source']} → {d['target']} (layers {d['layer_source']} → {d['layer_target']}, "
                  f"{d['n_test_items']} held-out items, typical |h| {d['typical_norm']:.1f})", "",
                  "| condition | " + " | ".join(f"p(a={x:g})" for x in a) + " | slope | ratio to native |",
                  "|---|" + "---|" * (len(a) + 2)]
        for c, s in d["pooled"].items():
            lines.append(f"| {c} | " + " | ".join(f"{p:.3f}" for p in s["p"]) + f" | {format_ci(s['slope'], 3)} | "
                         f"{'—' if c == 'native' else format_ci(s['ratio_to_native'])} |")
        lines += ["", "Native, per behaviour (does the target respond at all?):", "",
                  "| behaviour | " + " | ".join(f"p(a={x:g})" for x in a) + " | slope | responds |",
                  "|---|" + "---|" * (len(a) + 2)]
        for b, per in d["per_behaviour"].items():
            s = per["native"]
            responds = "yes" if s["slope"]["lo"] > 0 else "no" if s["slope"]["hi"] >= 0 else "reversed"
            lines.append(f"| {b} | " + " | ".join(f"{p:.3f}" for p in s["p"]) + f" | {format_ci(s['slope'], 3)} | "
                         f"{responds} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def write_results(results: dict[str, Any], out_dir: str | Path) -> list[Path]:
    from ..core.atomic import atomic_write_json, atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "ab_results.json", results)
    atomic_write_text(out / "ab_results.md", markdown(results))
    return [out / "ab_results.json", out / "ab_results.md"]

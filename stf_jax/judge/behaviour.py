"""Behavioural evaluation: does a transferred vector change what the target writes, as judged independently?

For each directed pair (source → target) at the steered layers, on the alignment's split of the run's
pairs (`stf_jax.steer.evaluate.condition_vectors`: native trait vectors, one per transfer method carried
leave-one-trait-out, and the zero_shot / random / shuffled controls):

1. the strength `a` (units of the layer's mean residual norm) is chosen per target model on the 8
   calibration prompts with native vectors only: the largest `a` on the grid at which native steering
   passes the fluency guard (`fluency.guard`: mean drop of the unsteered model's per-token log-prob
   ≤ 1.0 nat, repetition-rate rise ≤ 0.15; at +a and at −a) for at least 75 % of the judged traits;
2. the 24 held-out neutral prompts are answered greedily (`max_new_tokens` new tokens, the model's chat
   template) unsteered and with every condition × judged trait × sign (±a); steering covers the prompt
   and every generated token, as `stf_jax.steer generate` does;
3. each text is judged (`stf_jax.judge.JUDGES`) and fluency-scored; per trait and condition: the judge
   change at +a and at −a against the unsteered text of the same prompt, the effect (half the +a − −a
   difference), its ratio to the native effect — all with paired bootstrap intervals over prompts — and
   the fluency guard. Pooled over traits: the mean standardized effect (effect / SD of the unsteered
   scores) and its ratio to native.

Many conditions share one compiled generation: each row of a batch carries its own steering vector
(an `Intervention` whose vectors are [L, B, 1, D]; the decoder broadcasts them per row), so a batch holds
whole groups of the prompts, each group with its (condition, trait, ±a). Generations are cached in
OUT/generations/ and reused when the same vector, strength and prompts come again (resumable).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..transfer.carry_settings import CarrySettings
from ..steer import fluency
from . import JUDGES, judge_for
from . import prompts as prompt_sets
from ..core.stats import format_ci, interval, resample_indices
from ..extract.store import pair_tag
from ..options import OptionError, check_options, option
from ..safe_paths import inside

DEFAULT_TRAITS = ("verbosity", "formality", "optimism", "enthusiasm", "technical_complexity", "hedging",
                  "emotional_tone")


@dataclasses.dataclass(frozen=True)
class BehaviourConfig:
    """Settings of the behavioural evaluation (recorded in behaviour_results.json).

    alpha: a fixed strength for every target (None: choose per target from alpha_grid on the calibration
    prompts). methods / controls / ridge / carry: as in `stf_jax.steer.evaluate.SteerConfig`. sampled: also generate with
    temperature/top_p sampling (seeded) for `sampled_conditions`. batch_rows: rows per generation call
    (a multiple of the prompt count is used). fluency_tokens: completion tokens scored for log-prob;
    fluency_prompts: score log-prob on the first N prompts only (None: all; the rest are NaN, left out of means)."""

    traits: tuple[str, ...] = DEFAULT_TRAITS
    methods: tuple[str, ...] = ("procrustes", "affine", "linear")
    controls: tuple[str, ...] = ("zero_shot", "random", "shuffled")
    alpha: float | None = None
    alpha_grid: tuple[float, ...] = (0.1, 0.2, 0.3)
    calibration_guard_fraction: float = 0.75
    n_prompts: int = option(24, ge=1)
    n_calibration: int = option(8, ge=1)
    max_new_tokens: int = option(48, ge=1)
    sampled: bool = False
    sampled_conditions: tuple[str, ...] = ("native", "affine", "random")
    temperature: float = option(0.7, ge=0)
    top_p: float = option(0.9, gt=0, le=1)
    seed: int = option(0, ge=0)
    bootstrap: int = option(1000, ge=1)
    k: int = option(256, ge=1)
    ridge: float | None = option(None, ge=0)
    carry: CarrySettings = CarrySettings()
    batch_rows: int = option(192, ge=1)
    fluency_tokens: int = option(32, ge=1)
    fluency_prompts: int | None = option(None, ge=1)
    chat_template: bool = True
    max_logprob_drop: float = fluency.MAX_LOGPROB_DROP
    max_repetition_rise: float = fluency.MAX_REPETITION_RISE

    def __post_init__(self):
        check_options(self)
        if not self.traits:
            raise OptionError("give at least one judged trait")
        for t in self.traits:
            judge_for(t)
        if not self.alpha_grid or not 0.0 < self.calibration_guard_fraction <= 1.0:
            raise OptionError("alpha_grid needs a value and calibration_guard_fraction must lie in (0, 1]")
        if not 1 <= self.n_prompts <= len(prompt_sets.EVAL):
            raise OptionError(f"n_prompts must lie in 1..{len(prompt_sets.EVAL)}")
        if not 1 <= self.n_calibration <= len(prompt_sets.CALIBRATION):
            raise OptionError(f"n_calibration must lie in 1..{len(prompt_sets.CALIBRATION)}")


# ---------------------------------------------------------------- generation with a vector per row


def _spec_key(vector: np.ndarray | None, alpha: float, prompts: Sequence[str], layer: int, mode: str,
              max_new_tokens: int) -> str:
    h = hashlib.sha1()
    h.update(json.dumps([list(prompts), layer, mode, max_new_tokens, round(float(alpha), 6)]).encode())
    if vector is not None and alpha != 0.0:
        h.update(np.ascontiguousarray(np.asarray(vector, np.float32)).tobytes())
    return h.hexdigest()[:20]


class GenerationCache:
    """{key: [texts]} persisted as JSON lines (one spec per line), appended as batches finish."""

    def __init__(self, path: Path | None):
        self.path, self.data = path, {}
        if path is not None and path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    rec = json.loads(line)
                    self.data[rec["key"]] = rec["texts"]

    def add(self, key: str, texts: list[str], meta: dict):
        self.data[key] = texts
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps({"key": key, **meta, "texts": texts}, ensure_ascii=False) + "\n")


def generate_specs(model, layer: int, prompts: Sequence[str], specs: Sequence[dict], scale: float,
                   cfg: BehaviourConfig, cache: GenerationCache, mode: str = "greedy", log=print) -> list[list[str]]:
    """Texts [spec][prompt] for specs {"vector": unit [D] | None, "alpha": float, ...}: every prompt under every
    spec. Cached specs are reused; the rest run in batches of whole prompt groups (one compiled shape)."""
    from ..models.generate import generate
    from ..steer.inject import position_mask, row_intervention

    keys = [_spec_key(s["vector"], s["alpha"], prompts, layer, mode, cfg.max_new_tokens) for s in specs]
    todo = [i for i, k in enumerate(keys) if k not in cache.data]
    todo = list(dict.fromkeys(todo))
    seen: set[str] = set()
    todo = [i for i in todo if not (keys[i] in seen or seen.add(keys[i]))]
    n_p = len(prompts)
    groups = max(1, cfg.batch_rows // n_p)
    chat = cfg.chat_template and getattr(model.tokenizer, "chat_template", None) is not None
    sampling = dict(temperature=cfg.temperature, top_p=cfg.top_p) if mode == "sampled" else {}
    t0 = time.perf_counter()
    for start in range(0, len(todo), groups):
        chunk = todo[start:start + groups]
        padded = chunk + [None] * (groups - len(chunk))  # fixed batch shape: pad with unsteered groups
        rows = np.zeros((groups * n_p, model.config.d_model), np.float32)
        for g, i in enumerate(padded):
            if i is not None and specs[i]["vector"] is not None and specs[i]["alpha"] != 0.0:
                rows[g * n_p:(g + 1) * n_p] = specs[i]["alpha"] * scale * np.asarray(specs[i]["vector"], np.float32)
        texts = generate(model, list(prompts) * groups, max_new_tokens=cfg.max_new_tokens, chat_template=chat,
                         intervention_for=lambda m, r=rows: row_intervention(model.config, layer, r, position_mask(m)),
                         seed=cfg.seed + start, **sampling)
        for g, i in enumerate(chunk):
            meta = {k: v for k, v in specs[i].items() if k != "vector"}
            cache.add(keys[i], texts[g * n_p:(g + 1) * n_p], {**meta, "mode": mode, "layer": layer})
        log(f"    generated {min(start + groups, len(todo))}/{len(todo)} groups of {n_p} "
            f"({time.perf_counter() - t0:.0f}s)")
    return [cache.data[k] for k in keys]


# ---------------------------------------------------------------- statistics


def _nanmean_rows(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Bootstrap means of x [n] over resampled indices idx [B, n], ignoring NaN."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x[idx], axis=1)


def condition_stats(base: np.ndarray, plus: np.ndarray, minus: np.ndarray, native_effect: np.ndarray | None,
                    idx: np.ndarray) -> dict[str, Any]:
    """Judge scores [n] of the unsteered, +a and −a texts of the same prompts -> changes with paired CIs.

    effect = (plus − minus) / 2 per prompt; ratio = mean effect / mean native effect (prompts resampled
    jointly on both sides). NaN scores (no words) drop that prompt from the mean concerned."""
    with np.errstate(invalid="ignore"):
        d_plus, d_minus, effect = plus - base, minus - base, (plus - minus) / 2.0

    def mean_ci(x):
        return interval(_nanmean_rows(x, idx), float(np.nanmean(x)) if np.isfinite(x).any() else float("nan"))

    out = {"delta_plus": mean_ci(d_plus), "delta_minus": mean_ci(d_minus), "effect": mean_ci(effect),
           "n_prompts": int(np.isfinite(effect).sum())}
    if native_effect is not None:
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            point = np.nanmean(effect) / np.nanmean(native_effect)
        out["ratio_to_native"] = interval(_nanmean_rows(effect, idx) / _nanmean_rows(native_effect, idx), float(point))
    return out


def fluency_stats(lp_base, lp_plus, lp_minus, rep_base, rep_plus, rep_minus, cfg: BehaviourConfig) -> dict:
    """Mean log-prob drop and repetition rise at ±a against the unsteered texts, and the guard."""
    def nm(x):
        return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")

    out = {}
    for sign, lp, rep in (("plus", lp_plus, rep_plus), ("minus", lp_minus, rep_minus)):
        drop = nm(lp_base - lp) if lp is not None else float("nan")
        rise = nm(rep - rep_base)
        out[f"logprob_drop_{sign}"] = drop
        out[f"repetition_rise_{sign}"] = rise
        out[f"empty_{sign}"] = None
        out[f"guard_{sign}"] = fluency.guard(drop, rise, cfg.max_logprob_drop, cfg.max_repetition_rise) \
            if lp is not None else bool(rise <= cfg.max_repetition_rise)
    out["guard"] = bool(out["guard_plus"] and out["guard_minus"])
    return out


# ---------------------------------------------------------------- the driver


def _scale(model, layer: int, prompts: Sequence[str], chat: bool) -> float:
    """The layer's mean residual norm over the (chat-formatted) prompts' tokens after the first."""
    from ..core.norms import typical_norms

    texts, special = fluency.format_prompts(model, prompts, chat)
    return typical_norms(model, texts, [layer], batch=None, padding_side="left", add_special_tokens=special)[layer]


def _fluency_all(model, prompts: Sequence[str], texts: Sequence[Sequence[str]], chat: bool, cfg: BehaviourConfig,
                 with_logprob: bool) -> tuple[np.ndarray | None, np.ndarray]:
    """Unsteered log-prob and repetition rate of every spec's texts: ([S, P] or None, [S, P]), one batched pass."""
    flat = [t for tx in texts for t in tx]
    rep = fluency.repetition_rates(flat).reshape(len(texts), len(prompts))
    if not with_logprob:
        return None, rep
    n = len(prompts) if cfg.fluency_prompts is None else min(cfg.fluency_prompts, len(prompts))
    part = fluency.unsteered_logprob(model, list(prompts[:n]) * len(texts), [t for tx in texts for t in tx[:n]], chat,
                                     cfg.fluency_tokens)
    lp = np.full((len(texts), len(prompts)), np.nan)
    lp[:, :n] = part.reshape(len(texts), n)
    return lp, rep


def calibrate(model, layer: int, scale: float, conds: dict, cfg: BehaviourConfig, cache: GenerationCache,
              with_logprob: bool = True, log=print) -> dict[str, Any]:
    """Choose `a` on the calibration prompts: the largest grid value at which native steering passes the
    fluency guard (both signs, as `fluency_stats` judges each trait in the evaluation) for at least
    `calibration_guard_fraction` of the judged traits. A mean over traits is not enough: one fluent trait
    can hide two broken ones, and the evaluation then distrusts most of what it measures."""
    prompts = list(prompt_sets.CALIBRATION[:cfg.n_calibration])
    specs = _mode_specs(conds, [], cfg.traits, 0.0)  # the unsteered spec
    for a in cfg.alpha_grid:
        specs += _mode_specs(conds, ["native"], cfg.traits, a)[1:]
    texts = generate_specs(model, layer, prompts, specs, scale, cfg, cache, log=log)
    chat = cfg.chat_template and getattr(model.tokenizer, "chat_template", None) is not None
    lp, rep = _fluency_all(model, prompts, texts, chat, cfg, with_logprob)
    rows = [_calibration_row(a, specs, texts, lp, rep, prompts, cfg) for a in cfg.alpha_grid]
    for row in rows:
        log(f"  calibration a={row['alpha']}: log-prob drop {row['logprob_drop']:.2f}, repetition rise "
            f"{row['repetition_rise']:.3f}, standardized native effect {row['std_effect']:.2f}, guard "
            f"{row['n_guard_pass']}/{len(cfg.traits)} traits: {'fluent' if row['fluent'] else 'NOT fluent'}")
    fluent = [r["alpha"] for r in rows if r["fluent"]]
    chosen = max(fluent) if fluent else min(cfg.alpha_grid)
    return {"grid": rows, "alpha": chosen, "prompts": prompts,
            "rule": "largest grid alpha at which native steering passes the fluency guard (log-prob drop <= "
                    f"{cfg.max_logprob_drop} nat/token and repetition rise <= {cfg.max_repetition_rise}, at +a "
                    f"and at -a) for at least {cfg.calibration_guard_fraction:.0%} of the judged traits, on the "
                    "calibration prompts"}


def _calibration_row(a: float, specs: list[dict], texts, lp, rep, prompts: Sequence[str],
                     cfg: BehaviourConfig) -> dict[str, Any]:
    """One grid value, judged by `_trait_rows` exactly as the evaluation judges native steering: per trait
    the guard and the standardized effect, their means over traits, and whether enough traits pass."""
    keep = [0] + [i for i, s in enumerate(specs) if s["condition"] == "native" and abs(s["alpha"]) == a]
    per, std_effects, _ = _trait_rows(["native"], [specs[i] for i in keep], [texts[i] for i in keep],
                                      None if lp is None else lp[keep], rep[keep], prompts, cfg,
                                      resample_indices(len(prompts), cfg.bootstrap, cfg.seed))
    rows = per["native"]["traits"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        effect = {t: float(np.nanmean(e)) for t, e in zip(cfg.traits, std_effects["native"])}
    mean = lambda key: float(np.nanmean([[r[f"{key}_plus"], r[f"{key}_minus"]] for r in rows.values()]))  # noqa: E731
    n_pass = sum(r["guard"] for r in rows.values())
    return {"alpha": a, "logprob_drop": mean("logprob_drop") if lp is not None else float("nan"),
            "repetition_rise": mean("repetition_rise"), "std_effect": float(np.nanmean(list(effect.values()))),
            "std_effect_per_trait": effect, "guard_per_trait": {t: r["guard"] for t, r in rows.items()},
            "n_guard_pass": int(n_pass), "fluent": bool(n_pass >= cfg.calibration_guard_fraction * len(rows))}


def _mode_specs(conds: dict, names: Sequence[str], traits: Sequence[str], a: float) -> list[dict]:
    """The unsteered spec, then every condition × trait × sign (±a): what one decoding mode generates."""
    specs = [{"condition": "unsteered", "trait": "", "alpha": 0.0, "vector": None}]
    for c in names:
        for t in traits:
            for sign in (1.0, -1.0):
                specs.append({"condition": c, "trait": t, "alpha": sign * a, "vector": conds[c][t]})
    return specs


def _trait_rows(names, specs, texts, lp_all, rep_all, prompts, cfg: BehaviourConfig, idx):
    """Per condition and trait: judge changes with paired CIs and the fluency guard; also the standardized
    per-prompt effects [T, P] per condition (for pooling) and the unsteered judge mean/SD per trait."""
    where = {(s["condition"], s["trait"], np.sign(s["alpha"])): i for i, s in enumerate(specs)}
    base_texts = texts[0]
    lp0, rep0 = (lp_all[0] if lp_all is not None else None), rep_all[0]
    per: dict[str, dict] = {c: {"traits": {}} for c in names}
    std_effects: dict[str, list[np.ndarray]] = {c: [] for c in names}
    unsteered = {}
    for t in cfg.traits:
        judge = JUDGES[t]
        base = judge(base_texts)
        sd = float(np.nanstd(base)) or 1.0
        unsteered[t] = {"mean": float(np.nanmean(base)), "sd": sd}
        native_effect = None
        for c in names:
            sc = {}
            for sign in (1.0, -1.0):
                i = where[(c, t, sign)]
                sc[sign] = (judge(texts[i]), lp_all[i] if lp_all is not None else None, rep_all[i], texts[i])
            with np.errstate(invalid="ignore"):
                eff = (sc[1.0][0] - sc[-1.0][0]) / 2.0
            if c == "native":
                native_effect = eff
            row = condition_stats(base, sc[1.0][0], sc[-1.0][0], None if c == "native" else native_effect, idx)
            row.update(fluency_stats(lp0, sc[1.0][1], sc[-1.0][1], rep0, sc[1.0][2], sc[-1.0][2], cfg))
            row["empty_plus"] = int(sum(not x.strip() for x in sc[1.0][3]))
            row["empty_minus"] = int(sum(not x.strip() for x in sc[-1.0][3]))
            row["example"] = {"prompt": prompts[0], "unsteered": base_texts[0], "plus": sc[1.0][3][0],
                              "minus": sc[-1.0][3][0]}
            per[c]["traits"][t] = row
            std_effects[c].append(eff / sd)
    return per, std_effects, unsteered


def _pooled(per: dict, std_effects: dict, traits: Sequence[str], idx) -> None:
    """Pooled over traits, into per[c]["pooled"]: the mean standardized effect (prompts resampled jointly
    across traits), its ratio to native, and how many traits pass the guard / have an effect CI above 0."""
    nat = np.stack(std_effects["native"]) if "native" in std_effects else None
    for c in per:
        per_prompt = np.nanmean(np.stack(std_effects[c]), 0)  # [T, P] -> [P]
        pooled = {"std_effect": interval(_nanmean_rows(per_prompt, idx), float(np.nanmean(per_prompt))),
                  "n_guard_pass": int(sum(per[c]["traits"][t]["guard"] for t in traits)),
                  "n_traits": len(traits),
                  "n_effect_ci_above_zero": int(sum(per[c]["traits"][t]["effect"]["lo"] > 0 for t in traits))}
        if nat is not None and c != "native":
            nat_pp = np.nanmean(nat, 0)
            pooled["ratio_to_native"] = interval(_nanmean_rows(per_prompt, idx) / _nanmean_rows(nat_pp, idx),
                                                 float(np.nanmean(per_prompt) / np.nanmean(nat_pp)))
        per[c]["pooled"] = pooled


def _evaluate_mode(model, layer_t: int, prompts, conds: dict, a: float, scale: float, chat: bool, mode: str,
                   cfg: BehaviourConfig, cache: GenerationCache, with_logprob: bool, idx, log=print) -> dict:
    """Generate, judge and fluency-score one decoding mode (greedy or sampled) of one direction."""
    names = [c for c in conds if mode == "greedy" or c in cfg.sampled_conditions]
    specs = _mode_specs(conds, names, cfg.traits, a)
    log(f"  {mode}: {len(specs)} specs x {len(prompts)} prompts")
    texts = generate_specs(model, layer_t, prompts, specs, scale, cfg, cache, mode, log)
    lp_all, rep_all = _fluency_all(model, prompts, texts, chat, cfg, with_logprob)
    per, std_effects, unsteered = _trait_rows(names, specs, texts, lp_all, rep_all, prompts, cfg, idx)
    _pooled(per, std_effects, cfg.traits, idx)
    for c in names:
        p = per[c]["pooled"]
        log(f"  {mode} {c}: standardized effect {format_ci(p['std_effect'])}"
            + (f", ratio {p['ratio_to_native']['mean']:.2f}" if "ratio_to_native" in p else "")
            + f", guard {p['n_guard_pass']}/{p['n_traits']}")
    lp0 = lp_all[0] if lp_all is not None else None
    return {"conditions": per, "unsteered": unsteered,
            "unsteered_logprob": float(np.nanmean(lp0)) if lp0 is not None else None,
            "unsteered_repetition": float(np.mean(rep_all[0]))}


def evaluate_direction(model, source: str, target: str, layer_s: int, layer_t: int, conds: dict, notes: dict,
                       cfg: BehaviourConfig, out_dir: Path | None, with_logprob: bool = True, log=print) -> dict:
    """One source → target direction: choose `a` (or take cfg.alpha), then evaluate each decoding mode."""
    chat = cfg.chat_template and getattr(model.tokenizer, "chat_template", None) is not None
    prompts = list(prompt_sets.EVAL[:cfg.n_prompts])
    scale = _scale(model, layer_t, prompts, chat)
    cache = GenerationCache(inside(out_dir, Path("generations") / f"{pair_tag(source, target)}.jsonl") if out_dir else None)
    entry: dict[str, Any] = {"source": source, "target": target, "layer_source": layer_s, "layer_target": layer_t,
                             "mean_norm": scale, "chat_template": chat,
                             "cosine_to_native": notes.get("cosine_to_native"),
                             "shuffled_from": notes.get("shuffled_from")}
    if cfg.alpha is None:
        entry["calibration"] = calibrate(model, layer_t, scale, conds, cfg, cache, with_logprob, log)
        a = entry["calibration"]["alpha"]
    else:
        a = cfg.alpha
    entry["alpha"] = a
    log(f"  {source}->{target}: a = {a} (x mean |h| {scale:.1f})")
    idx = resample_indices(len(prompts), cfg.bootstrap, cfg.seed)
    entry["modes"] = {mode: _evaluate_mode(model, layer_t, prompts, conds, a, scale, chat, mode, cfg, cache,
                                           with_logprob, idx, log)
                      for mode in ["greedy"] + (["sampled"] if cfg.sampled else [])}
    return entry


def run_behaviour(run_dir: str | Path, cfg: BehaviourConfig = BehaviourConfig(),
                  layers: dict[tuple[str, str], tuple[int, int]] | None = None, layer: int = -6,
                  directions: Sequence[tuple[str, str]] | None = None, out_dir: str | Path | None = None,
                  with_logprob: bool = True, log=print) -> dict[str, Any]:
    """The behavioural evaluation over the directed model pairs of an extraction run (see the module doc)."""
    from ..extract.rundir import AlignInputError, find_models, pair_table
    from ..models.loading import load_model
    from ..steer.evaluate import SteerConfig, direction_conditions

    t_start = time.perf_counter()
    out = Path(out_dir) if out_dir is not None else None
    refs = find_models([run_dir])
    names = sorted(refs)
    if directions is None:
        directions = [(s, t) for s in names for t in names if s != t]
    table, orders = pair_table([refs[m] for m in names])
    missing = sorted(set(cfg.traits) - set(table.trait_names))
    if missing:
        raise AlignInputError(f"trait(s) {missing} are not in {run_dir}; it has {list(table.trait_names)}")
    scfg = SteerConfig(methods=cfg.methods, controls=cfg.controls, k=cfg.k, ridge=cfg.ridge, seed=cfg.seed,
                       traits=cfg.traits, carry=cfg.carry)
    results: dict[str, Any] = {"run_dir": str(run_dir), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                               "config": dataclasses.asdict(cfg), "judges": {t: {
                                   "judge": JUDGES[t].name, "unit": JUDGES[t].unit, "measures": JUDGES[t].measures,
                                   "blind_spots": JUDGES[t].blind_spots} for t in cfg.traits},
                               "prompts": list(prompt_sets.EVAL[:cfg.n_prompts]), "directions": []}
    models: dict[str, Any] = {}
    for s_name, t_name in directions:
        t0 = time.perf_counter()
        ls, lt, conds, notes, _ = direction_conditions(refs, orders, table, s_name, t_name, layers, layer, scfg,
                                                       cfg.traits)
        log(f"{s_name}->{t_name} (layers {ls}->{lt}): vectors ready ({time.perf_counter() - t0:.0f}s); cosine to "
            "native " + ", ".join(f"{c} {np.mean(list(v.values())):.2f}" for c, v in notes["cosine_to_native"].items()))
        if t_name not in models:
            models[t_name] = load_model(t_name)
        entry = evaluate_direction(models[t_name], s_name, t_name, ls, lt, conds, notes, cfg, out, with_logprob, log)
        entry["seconds"] = time.perf_counter() - t0
        results["directions"].append(entry)
        if out is not None:  # partial results survive an interruption
            write_results(results, out)
    results["seconds"] = time.perf_counter() - t_start
    return results


# ---------------------------------------------------------------- output


_f = format_ci


def markdown(results: dict[str, Any], mode: str = "greedy") -> str:
    lines = ["# Behavioural evaluation (independent judges)", "",
             f"Run: `{results['run_dir']}`; {len(results['prompts'])} held-out neutral prompts, "
             f"{results['config']['max_new_tokens']} new tokens, {mode} decoding. Judge change against the "
             "unsteered text of the same prompt at +a and −a; effect = (+a − −a)/2; ratio = effect / native "
             "effect; 95% paired bootstrap intervals over prompts. Guard: unsteered-model log-prob drop ≤ "
             f"{results['config']['max_logprob_drop']} nat/token and repetition-rate rise ≤ "
             f"{results['config']['max_repetition_rise']} at both signs.", ""]
    for d in results["directions"]:
        m = d["modes"].get(mode)
        if m is None:
            continue
        lines += [f"## {d['source']} → {d['target']} (layers {d['layer_source']} → {d['layer_target']}, "
                  f"a = {d['alpha']} × mean |h|)", ""]
        if "calibration" in d:
            lines += ["Choice of a (calibration prompts, native vectors): "
                      + "; ".join(f"a={r['alpha']}: drop {r['logprob_drop']:.2f}, rep +{r['repetition_rise']:.3f}, "
                                  f"std effect {r['std_effect']:.2f}, guard {_n_guard(r)}{'' if r['fluent'] else ' (not fluent)'}"
                                  for r in d["calibration"]["grid"]), ""]
        lines += ["| condition | std effect (pooled) | ratio to native | traits with effect CI > 0 | guard |",
                  "| --- | --- | --- | --- | --- |"]
        for c, row in m["conditions"].items():
            p = row["pooled"]
            lines.append(f"| {c} | {_f(p['std_effect'])} | {_f(p.get('ratio_to_native'))} | "
                         f"{p['n_effect_ci_above_zero']}/{p['n_traits']} | {p['n_guard_pass']}/{p['n_traits']} |")
        lines += ["", "| trait (judge) | condition | Δ at +a | Δ at −a | effect | ratio to native | log-prob drop ± | "
                  "repetition rise ± | guard |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for t in results["config"]["traits"]:
            for c, row in m["conditions"].items():
                r = row["traits"][t]
                lines.append(f"| {t} ({results['judges'][t]['judge']}) | {c} | {_f(r['delta_plus'])} | "
                             f"{_f(r['delta_minus'])} | {_f(r['effect'])} | {_f(r.get('ratio_to_native'))} | "
                             f"{r['logprob_drop_plus']:.2f} / {r['logprob_drop_minus']:.2f} | "
                             f"{r['repetition_rise_plus']:+.3f} / {r['repetition_rise_minus']:+.3f} | "
                             f"{'ok' if r['guard'] else 'FAIL'} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _n_guard(row: dict) -> str:
    """'k/n traits' of a calibration row ('?' for results written before the per-trait rule)."""
    per = row.get("guard_per_trait")
    return f"{row['n_guard_pass']}/{len(per)} traits" if per else "? traits"


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    return obj


def write_results(results: dict[str, Any], out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "behaviour_results.json", out / "behaviour_results.md"]
    paths[0].write_text(json.dumps(_jsonable(results), indent=1))
    paths[1].write_text(markdown(results))
    return paths

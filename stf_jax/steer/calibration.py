"""Which layer and how strong: the strongest steering that still reads fluently, chosen for the user.

Users of every steering library get stuck on the same two numbers. Here, for each candidate layer, the
vector's direction is added at `a × typical|h|` of that layer (a on a grid, both signs, at every token
as llama.cpp does), and two things are measured at each point:

- **effect**: the propensity shift on held-out contrast pairs of the trait (token-normalised
  log P(positive) − log P(negative), half the difference between +a and −a), with a bootstrap interval
  over pairs (`steer.propensity.PrefixScorer`: the blocks below the layer run once);
- **fluency**: the guard of `steer.fluency` on greedy completions of fixed prompts steered at +a and at
  −a: the unsteered model's log-prob drop and the repetition rise against the unsteered completions.

The choice: per layer, the largest a whose effect interval lies above 0 while the completions at it and
at every smaller a pass the guard in both signs (a point that passes above one that fails is the luck of a
few prompts); over layers, the one with the largest effect there. The calibrated vector holds
that one layer at `a × typical|h|` in residual units, so `llama-completion --control-vector-scaled
FILE:1` and `steer generate --vector FILE --alpha 1` apply the calibrated steering as measured.

    cal = stf_jax.calibrate("smollm2-135m", "formality.gguf", trait="formality")
    cal.layer, cal.strength          # e.g. 14, 0.3 (× typical |h|)
    cal.vector.save("formality_calibrated.gguf")
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..core.stats import mean_ci
from ..core.vector import SteeringVector
from ..errors import SteeringInputError
from ..options import check_options, option
from . import fluency

# strengths in units of the layer's typical |h| (0.15 is the library's default strength)
DEFAULT_GRID = (0.05, 0.1, 0.15, 0.2, 0.3, 0.45, 0.6)
MAX_CANDIDATE_LAYERS = 4
PROMPTS = ("Describe a walk in the park on an autumn afternoon.", "How do I make a good cup of coffee?",
           "Write a note to your landlord about a leaking tap.", "What should I pack for a weekend trip?",
           "Tell me about the moon.", "Explain how a bicycle stays upright.")


@dataclasses.dataclass(frozen=True)
class CalibrateOptions:
    """The search: strength grid (× typical |h|), held-out pairs, fluency prompts and the guard."""

    strengths: tuple[float, ...] = option(DEFAULT_GRID, gt=0.0, le=10.0)
    n_pairs: int = option(16, ge=2)
    n_prompts: int = option(4, ge=1, le=len(PROMPTS))
    max_new_tokens: int = option(24, ge=4, le=512)
    max_logprob_drop: float = option(fluency.MAX_LOGPROB_DROP, gt=0.0)
    max_repetition_rise: float = option(fluency.MAX_REPETITION_RISE, gt=0.0)
    chat_template: bool = True
    bootstrap: int = option(1000, ge=100)
    seed: int = 0

    def __post_init__(self):
        check_options(self)
        if not self.strengths:
            raise SteeringInputError("strengths= needs at least one value")


@dataclasses.dataclass
class Calibration:
    """Every grid point measured (`rows`), the choice (`layer`, `strength` × typical |h|; None when no
    point passes), the calibrated vector, and why."""

    rows: list[dict[str, Any]]
    layer: int | None
    strength: float | None
    vector: SteeringVector | None
    reason: str
    info: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"layer": self.layer, "strength": self.strength, "reason": self.reason, "rows": self.rows,
                **self.info}

    def markdown(self) -> str:
        lines = [f"# Calibration: {self.info['trait']} on {self.info['model']}", "",
                 f"Chosen: {self._choice()}", "", f"Rule: {self.info['rule']}", "",
                 "| layer | a (× typical \\|h\\|) | added \\|v\\| | effect (nats/token) [95% CI] | log-prob drop +a / −a "
                 "| repetition rise +a / −a | fluent |", "|---|---|---|---|---|---|---|"]
        for r in self.rows:
            e = r["effect"]
            lines.append(f"| {r['layer']} | {r['strength']:g} | {r['added_norm']:.1f} | {e['mean']:+.3f} "
                         f"[{e['lo']:+.3f}, {e['hi']:+.3f}] | {r['logprob_drop_plus']:.2f} / "
                         f"{r['logprob_drop_minus']:.2f} | {r['repetition_rise_plus']:+.2f} / "
                         f"{r['repetition_rise_minus']:+.2f} | {'yes' if r['fluent'] else 'no'} |")
        lines += ["", f"{self.info['n_pairs']} held-out pairs ({self.info['pairs']}), {self.info['n_prompts']} "
                  f"fluency prompts × {self.info['max_new_tokens']} tokens; {self.info['seconds']:.0f} s."]
        return "\n".join(lines) + "\n"

    def _choice(self) -> str:
        if self.layer is None:
            return f"none ({self.reason})"
        return (f"HF layer {self.layer}, a = {self.strength:g} × typical |h| (|v| = "
                f"{np.linalg.norm(self.vector.directions[self.layer]):.1f}): use the saved file at strength 1")

    def save(self, out_dir: str | Path, vector_name: str = "calibrated.gguf") -> list[Path]:
        """calibration.json, calibration.md, calibration.png and (when a point passed) the vector."""
        from ..core.atomic import atomic_write_json, atomic_write_text
        from ..safe_paths import inside

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = [out / "calibration.json", out / "calibration.md", out / "calibration.png"]
        atomic_write_json(written[0], self.to_json())
        atomic_write_text(written[1], self.markdown())
        curve_figure(self, written[2])
        if self.vector is not None:
            written.append(Path(self.vector.save(inside(out, vector_name))))
        return written


def calibrate(model, vector, pairs=None, trait: str | None = None, layers=None,
              options: CalibrateOptions | None = None, log=print, force: bool = False, **overrides) -> Calibration:
    """Search layer and strength for `vector` on `model` (see the module docstring).

    model: a loaded Model or a name. vector: a SteeringVector, a file, or {layer: array}. pairs: held-out
    ContrastPairs, a dataset name or file [the shipped pairs' test split]; trait: which of them [the
    vector's trait]. layers: candidate HF layers (a spec or list) [the vector's layers; at most 4 of them,
    spread over depth]. options / overrides: `CalibrateOptions` fields. A vector whose file names another
    model (its name or llama.cpp model hint) is refused unless force=True."""
    from ..models.loading import load_model
    from .vectors import as_vector

    options = dataclasses.replace(options or CalibrateOptions(), **overrides)
    vector = as_vector(vector)
    trait = trait or (vector.trait if vector.trait != "unknown" else None)
    model = load_model(model) if isinstance(model, str) else model
    _check_model(model, vector, force)
    candidates = _candidate_layers(model, vector, layers)
    held_out, where = _held_out_pairs(pairs, trait, options)
    t0 = time.perf_counter()
    fixed = _FluencyPrompts(model, options)
    units = vector.normalized().directions
    rows = []
    for layer in candidates:
        rows += _layer_rows(model, layer, units[layer], held_out, fixed, options)
        log(f"  layer {layer}: " + ", ".join(f"a={r['strength']:g} effect {r['effect']['mean']:+.3f}"
                                             f"{'' if r['fluent'] else ' (not fluent)'}"
                                             for r in rows if r["layer"] == layer))
    layer, strength, reason = _choose(rows)
    calibrated = None
    if layer is not None:
        row = next(r for r in rows if r["layer"] == layer and r["strength"] == strength)
        calibrated = SteeringVector({layer: units[layer] * np.float32(strength * row["typical_norm"])},
                                    model=getattr(model, "name", vector.model), model_type=model.config.model_type,
                                    trait=trait or vector.trait, method=vector.method, units="residual",
                                    provenance={**vector.provenance, "strength_source": "calibrated",
                                                "calibration": json.dumps({"layer": layer, "strength": strength,
                                                                           "typical_norm": row["typical_norm"]})})
    info = {"model": getattr(model, "name", "model"), "trait": trait or "unknown", "pairs": where,
            "n_pairs": len(held_out), "n_prompts": options.n_prompts, "max_new_tokens": options.max_new_tokens,
            "candidate_layers": candidates, "options": dataclasses.asdict(options),
            "seconds": time.perf_counter() - t0,
            "rule": "per layer, the largest a whose effect interval lies above 0 while the completions at it and "
                    "at every smaller a pass the fluency guard at +a and at -a (log-prob drop <= "
                    f"{options.max_logprob_drop} nat/token, repetition rise <= {options.max_repetition_rise}); over "
                    "layers, the largest effect there"}
    return Calibration(rows, layer, strength, calibrated, reason, info)


# ------------------------------------------------------------------ inputs


def _check_model(model, vector: SteeringVector, force: bool) -> None:
    """The vector fits the model: its width, and (unless forced) the model its file names."""
    from ..core.vector import model_mismatch

    problem = model_mismatch(vector, getattr(model, "name", "unknown"), model.config.model_type)
    if problem and not force:
        raise SteeringInputError(f"the vector was {problem}: carry it first (python -m stf_jax.transfer apply), or "
                                 "force= to calibrate it anyway")
    d = model.config.d_model
    if vector.d_model != d:  # one width for every layer (SteeringVector checks it)
        raise SteeringInputError(f"the vector has width {vector.d_model}, but {getattr(model, 'name', 'the model')} "
                                 f"has d_model {d}: a vector for another model (carry it first: python -m "
                                 "stf_jax.transfer apply)")


def _candidate_layers(model, vector: SteeringVector, layers) -> list[int]:
    """Steerable block outputs the vector has a direction for: the ones asked, else at most
    MAX_CANDIDATE_LAYERS of its own, spread over depth."""
    from ..core.layers import resolve_layers
    from .propensity import steered_layer

    if layers is not None:
        asked = list(resolve_layers(layers, model.config.n_layers, getattr(model, "name", None), flag="layers="))
    else:
        asked = sorted(vector.directions)
    for layer in asked:
        steered_layer(model, layer)
    missing = [lay for lay in asked if lay not in vector.directions]
    if missing:
        raise SteeringInputError(f"the vector has no direction at HF layer(s) {missing}; it has "
                                 f"{sorted(vector.directions)}")
    if layers is None and len(asked) > MAX_CANDIDATE_LAYERS:
        pick = np.unique(np.round(np.linspace(0, len(asked) - 1, MAX_CANDIDATE_LAYERS)).astype(int))
        asked = [asked[i] for i in pick]
    return asked


def _held_out_pairs(pairs, trait: str | None, options: CalibrateOptions):
    """(pairs, description): given pairs, or a dataset's test split of the trait, first n_pairs."""
    from ..data import load_pairs
    from ..data.split import split_pairs

    if pairs is None or isinstance(pairs, (str, Path)):
        if trait is None:
            raise SteeringInputError("no trait to calibrate on: the vector names none; give trait= (--trait) or "
                                     "held-out pairs=")
        name = "shipped" if pairs is None else pairs
        every = load_pairs(name, traits=[trait])
        if not every:
            raise SteeringInputError(f"no pairs of trait {trait!r} in {name}; give --pairs FILE with held-out pairs")
        test = set(split_pairs(every).test) if pairs is None else {p.id for p in every}
        chosen = [p for p in every if p.id in test][:options.n_pairs]
        where = f"{name}, trait {trait}" + (", test split" if pairs is None else "")
    else:
        chosen = list(pairs)[:options.n_pairs]
        where = "given pairs"
    if len(chosen) < 2:
        raise SteeringInputError(f"{len(chosen)} held-out pair(s) for {where}; give >= 2 (the interval resamples "
                                 "pairs)")
    return chosen, where


# ------------------------------------------------------------------ measures


class _FluencyPrompts:
    """The fixed prompts, their unsteered completions and scores: computed once, compared per point."""

    def __init__(self, model, options: CalibrateOptions):
        from ..models.generate import generate

        self.prompts = list(PROMPTS[:options.n_prompts])
        self.chat = options.chat_template and getattr(model.tokenizer, "chat_template", None) is not None
        self.texts = generate(model, self.prompts, max_new_tokens=options.max_new_tokens, chat_template=self.chat)
        self.logprob = fluency.unsteered_logprob(model, self.prompts, self.texts, self.chat, options.max_new_tokens)
        self.repetition = fluency.repetition_rates(self.texts)


def _layer_rows(model, layer: int, direction, pairs, fixed: _FluencyPrompts,
                options: CalibrateOptions) -> list[dict[str, Any]]:
    """One row per grid strength at `layer` (direction: unit [D]): effect with its interval, and the guard at
    +a and −a."""
    from .propensity import PrefixScorer

    unit = np.asarray(direction, np.float32)
    scorer = PrefixScorer(model, layer, [p.prompt for p in pairs], [p.positive for p in pairs],
                          [p.negative for p in pairs])
    total, count = scorer.mean_norm()
    norm = total / max(count, 1)
    base = scorer.propensity()
    grid = list(options.strengths)
    texts = _steered_texts(model, layer, unit, [a * norm for a in grid], fixed, options)
    p = len(fixed.prompts)
    lps = fluency.unsteered_logprob(model, fixed.prompts * len(texts), [t for ts in texts for t in ts], fixed.chat,
                                    options.max_new_tokens, batch_size=16).reshape(len(texts), p)
    rows = []
    for i, a in enumerate(grid):
        plus, minus = scorer.propensity(unit, a * norm), scorer.propensity(unit, -a * norm)
        guard = {}
        for sign, k in (("plus", 2 * i), ("minus", 2 * i + 1)):
            t = texts[k]
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an all-empty completion set: NaN, not fluent
                guard[f"logprob_drop_{sign}"] = float(np.nanmean(fixed.logprob - lps[k]))
            guard[f"repetition_rise_{sign}"] = float(np.mean(fluency.repetition_rates(t) - fixed.repetition))
            guard[f"example_{sign}"] = t[0]
        fluent = all(fluency.guard(guard[f"logprob_drop_{s}"], guard[f"repetition_rise_{s}"],
                                   options.max_logprob_drop, options.max_repetition_rise) for s in ("plus", "minus"))
        rows.append({"layer": layer, "strength": a, "typical_norm": norm, "added_norm": a * norm,
                     "effect": mean_ci((plus - minus) / 2.0, options.bootstrap, options.seed),
                     "shift_plus": float(np.mean(plus - base)), "shift_minus": float(np.mean(minus - base)),
                     **guard, "fluent": fluent})
    return rows


def _steered_texts(model, layer: int, unit: np.ndarray, scales: Sequence[float], fixed: _FluencyPrompts,
                   options: CalibrateOptions) -> list[list[str]]:
    """Greedy completions of the fixed prompts at +s and −s for every s: one batch, a vector per row."""
    from ..models.generate import generate
    from .inject import position_mask, row_intervention

    p = len(fixed.prompts)
    signed = [sign * s for s in scales for sign in (1.0, -1.0)]
    rows = np.repeat(np.asarray(signed, np.float32)[:, None] * unit[None, :], p, axis=0)  # [2G·P, D]
    texts = generate(model, fixed.prompts * len(signed), max_new_tokens=options.max_new_tokens,
                     chat_template=fixed.chat,
                     intervention_for=lambda m: row_intervention(model.config, layer, rows, position_mask(m)))
    return [texts[i * p:(i + 1) * p] for i in range(len(signed))]


def _choose(rows: list[dict[str, Any]]) -> tuple[int | None, float | None, str]:
    """Per layer, up the grid: the largest strength whose effect interval lies above 0 while it and every
    smaller strength pass the guard (a point that passes above one that fails is luck of a few prompts, not
    a safe setting); over layers, the largest effect there."""
    best = {}
    for layer in dict.fromkeys(r["layer"] for r in rows):
        for r in sorted((r for r in rows if r["layer"] == layer), key=lambda r: r["strength"]):
            if not r["fluent"]:
                break
            if r["effect"]["lo"] > 0:
                best[layer] = r
    if not best:
        fluent = any(r["fluent"] for r in rows)
        return None, None, ("no grid point moves the held-out pairs with an interval above 0 while fluent: the vector "
                            "may point the other way or not reach this trait" if fluent else
                            "no grid point passes the fluency guard: try smaller strengths")
    chosen = max(best.values(), key=lambda r: r["effect"]["mean"])
    return chosen["layer"], chosen["strength"], ("the largest strength whose effect interval lies above 0 while it and "
                                                 "every smaller one pass the fluency guard; the best layer")


def curve_figure(cal: Calibration, path: Path) -> None:
    """Effect (left axis) and log-prob drop (right axis) against strength, one colour per layer; chosen point
    ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..core.atomic import atomic_path

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
    for i, layer in enumerate(cal.info["candidate_layers"]):
        rs = [r for r in cal.rows if r["layer"] == layer]
        a = [r["strength"] for r in rs]
        color = f"C{i % 10}"
        ax.errorbar(a, [r["effect"]["mean"] for r in rs],
                    yerr=[[r["effect"]["mean"] - r["effect"]["lo"] for r in rs],
                          [r["effect"]["hi"] - r["effect"]["mean"] for r in rs]], color=color, marker="o",
                    label=f"L{layer}", capsize=2)
        bx.plot(a, [max(r["logprob_drop_plus"], r["logprob_drop_minus"]) for r in rs], color=color, marker="o")
    bx.axhline(cal.info["options"]["max_logprob_drop"], color="k", ls="--", lw=1, label="guard")
    if cal.layer is not None:
        r = next(r for r in cal.rows if r["layer"] == cal.layer and r["strength"] == cal.strength)
        ax.plot([r["strength"]], [r["effect"]["mean"]], "o", ms=14, mfc="none", mec="k", label="chosen")
    ax.set(xlabel="strength a (× typical |h|)", ylabel="propensity effect (nats/token)",
           title=f"{cal.info['trait']} on {cal.info['model']}")
    bx.set(xlabel="strength a (× typical |h|)", ylabel="worse log-prob drop of ±a (nats/token)", title="fluency")
    ax.legend(fontsize=8)
    bx.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)

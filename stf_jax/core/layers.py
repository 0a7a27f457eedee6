"""Layer specs: the one grammar for naming layers, and the one resolver every entry point calls.

Indices are Hugging Face hidden-state indices (`output_hidden_states=True`): a model with n blocks has
n + 1 hidden states; 0 = embeddings, i = output of block i, n = the last block's output after the final norm.

A spec is a comma-separated string, one value, or a sequence of values; each token is
    12       an index
    -6       counted from the end as in Python: -1 = n, -6 = n - 5 (the seed paper's sixth-from-last)
    0.67     relative depth in [0, 1]: round(0.67 * n); a token with a '.' (or a non-integer float)
    all      every index, 0..n
    10:20    a range like a Python slice (stop excluded: 10..19); ends may be negative or left out
             ("-6:" = the last six), and must lie in -(n + 1)..n + 1

`resolve_layers` gives sorted unique indices (extraction) or, with keep_order, the indices in the order
asked (the decoder: rows of hidden states and steering vectors follow it); `resolve_layer` wants exactly
one. Entry points: `DecoderConfig.resolve_layers`, `Model.resolve_layers`, `ModelRef.resolve_layer`
(+ "must have been extracted"), `align.affine.paired_token_states`.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

from ..errors import UserError


class LayerSpecError(UserError, ValueError):
    """A layer spec that does not name layers of the model."""


LayerSpec = str | int | float | Sequence[str | int | float]


def parse_layer_spec(spec: LayerSpec) -> tuple[str, ...]:
    """Normalize user input to a tuple of layer tokens, each checked for form (resolved per model by
    `resolve_layers`); an empty request is an error."""
    if isinstance(spec, str):
        spec = [s for s in spec.replace(" ", "").split(",") if s]
    elif not isinstance(spec, Iterable):  # int, float, numpy scalar
        spec = [spec]
    tokens = tuple(str(s) for s in spec)
    if not tokens:
        raise LayerSpecError("no layers requested: give indices (e.g. -6), relative depths (0.67), ranges (10:20) "
                             "or 'all'")
    for tok in tokens:
        _term(tok)
    return tokens


def resolve_layers(spec: LayerSpec, n_layers: int, model: str | None = None, *, keep_order: bool = False,
                   flag: str | None = "layers=") -> tuple[int, ...]:
    """A spec (or `parse_layer_spec` tokens) -> HF indices in [0, n_layers]: sorted and unique, or with
    keep_order in the order given (duplicates kept). `model` and `flag` name the model and option in errors."""
    out: list[int] = []
    for tok in parse_layer_spec(spec):
        out.extend(_indices(_term(tok), tok, n_layers, model, flag))
    return tuple(out) if keep_order else tuple(sorted(set(out)))


def resolve_layer(spec: LayerSpec, n_layers: int, model: str | None = None, *, flag: str | None = None) -> int:
    """A spec that names exactly one layer -> its HF index."""
    layers = resolve_layers(spec, n_layers, model, keep_order=True, flag=flag)
    if len(layers) != 1:
        raise LayerSpecError(f"{_prefix(flag)}{_show(spec)} names {len(layers)} layers "
                             f"of {model or 'the model'}; give one (e.g. -6 or 0.67)")
    return layers[0]


def _term(tok: str) -> tuple:
    """One token -> ("all",) | ("index", i) | ("depth", x) | ("range", start, stop), checked for form only."""
    if tok == "all":
        return ("all",)
    if ":" in tok:
        ends = tok.split(":")
        if len(ends) != 2 or not all(e == "" or _is_int(e) for e in ends):
            raise LayerSpecError(f"layer range {tok!r} must be START:STOP with integer ends (e.g. 10:20 or -6:)")
        return ("range", *(int(e) if e else None for e in ends))
    try:
        value = float(tok)
    except ValueError:
        raise LayerSpecError(f"layer {tok!r} is not an index, a relative depth, a range or 'all'") from None
    if not math.isfinite(value):
        raise LayerSpecError(f"layer {tok!r} is not an index, a relative depth, a range or 'all'")
    if "." in tok or not value.is_integer():
        if not 0.0 <= value <= 1.0:
            raise LayerSpecError(f"relative depth {tok} must lie in [0, 1]")
        return ("depth", value)
    return ("index", int(value))


def _indices(term: tuple, tok: str, n_layers: int, model: str | None, flag: str | None) -> list[int]:
    n = n_layers + 1  # hidden states
    if term[0] == "all":
        return list(range(n))
    if term[0] == "depth":
        return [int(round(term[1] * n_layers))]
    if term[0] == "index":
        _check(term[1], -n, n_layers, n_layers, model, flag, "layer", "indices")
        return [term[1] % n]
    start, stop = term[1], term[2]
    for end in (e for e in (start, stop) if e is not None):
        _check(end, -n, n, n_layers, model, flag, f"layer range {tok}: end", "range ends")
    out = list(range(n))[slice(start, stop)]
    if not out:
        raise LayerSpecError(f"{_prefix(flag)}layer range {tok} selects no layers of {model or 'a model'} "
                             f"with {n_layers} blocks (the stop is excluded, as in Python)")
    return out


def _check(i: int, low: int, high: int, n_layers: int, model: str | None, flag: str | None, what: str,
           valid: str):
    if not low <= i <= high:
        raise LayerSpecError(
            f"{_prefix(flag)}{what} {i} is out of range for {model or 'a model'} with {n_layers} blocks: valid "
            f"{valid} are {low}..{high} (0 = embeddings, {n_layers} = final-normed output)"
        )


def _is_int(s: str) -> bool:
    return s.lstrip("+-").isdigit()


def _prefix(flag: str | None) -> str:
    return f"{flag}: " if flag else ""


def _show(spec: LayerSpec) -> str:
    return repr(spec) if isinstance(spec, str) else str(spec)


def model_layer_pairs(specs: Sequence[str] | None, models: Sequence[str]
                      ) -> dict[tuple[str, str], tuple[int, int]] | None:
    """`--layers gemma3-270m:12 smollm2-135m:22` -> {(source, target): (layer_s, layer_t)} for every ordered
    pair of `models` (None when no spec is given): the one reading of per-model layer flags."""
    if not specs:
        return None
    per = {}
    for spec in specs:
        name, sep, idx = spec.rpartition(":")
        if not sep or not name:
            raise LayerSpecError(f"--layers takes MODEL:LAYER items (e.g. gemma3-270m:12), got {spec!r}")
        try:
            per[name] = int(idx)
        except ValueError:
            raise LayerSpecError(f"--layers {spec!r}: the layer must be an integer") from None
    missing = sorted(set(models) - set(per))
    if missing:
        raise LayerSpecError(f"--layers gives no layer for model(s) {missing}; the run has {list(models)}")
    return {(s, t): (per[s], per[t]) for s in models for t in models if s != t}

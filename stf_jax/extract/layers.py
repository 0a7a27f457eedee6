"""Layer requests -> HF hidden-state indices for one model.

Accepted: explicit indices ("12"), negative indices ("-6": the seed paper's sixth-from-last),
relative depth in (0, 1) ("0.67" -> round(0.67 * n_blocks)), or "all"; comma-separated lists mix them.
"""

from __future__ import annotations

from typing import Sequence

from ..errors import UserError


class LayerSpecError(UserError, ValueError):
    """A --layers request that does not name layers of the model."""


def parse_layer_spec(spec: str | Sequence[str | int | float]) -> tuple[str, ...]:
    """Normalize user input to a tuple of layer tokens (resolved per model by `resolve_layers`)."""
    if isinstance(spec, (int, float)):
        spec = [spec]
    if isinstance(spec, str):
        spec = [s for s in spec.replace(" ", "").split(",") if s]
    tokens = tuple(str(s) for s in spec)
    if not tokens:
        raise LayerSpecError("no layers requested: give indices (e.g. -6), relative depths (0.67) or 'all'")
    return tokens


def resolve_layers(tokens: Sequence[str], n_layers: int, model: str | None = None) -> tuple[int, ...]:
    """Tokens -> sorted unique HF indices in [0, n_layers] (0 = embeddings); `model` names it in errors."""
    out: set[int] = set()
    for tok in tokens:
        if tok == "all":
            out.update(range(n_layers + 1))
            continue
        try:
            value = float(tok)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError
        except ValueError:
            raise LayerSpecError(f"layer {tok!r} is not an index, a relative depth or 'all'") from None
        if "." in tok or not value.is_integer():
            if not 0.0 <= value <= 1.0:
                raise LayerSpecError(f"relative depth {tok} must lie in [0, 1]")
            out.add(int(round(value * n_layers)))
            continue
        idx = int(value)
        if not -(n_layers + 1) <= idx <= n_layers:
            raise LayerSpecError(
                f"--layers: layer {idx} is out of range for {model or 'a model'} with {n_layers} blocks: valid indices are "
                f"{-(n_layers + 1)}..{n_layers} (0 = embeddings, {n_layers} = final-normed output)"
            )
        out.add(idx % (n_layers + 1))
    return tuple(sorted(out))

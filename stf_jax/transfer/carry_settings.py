"""What the methods that read more than one source layer's vectors need (s2l: the source SAE; many-to-one:
a stack of layers), declared once for every stage that carries trait vectors (steer eval, judge behaviour,
judge ab) and free of JAX, so the CLIs build their flags without it."""

from __future__ import annotations

import dataclasses

from ..options import check_options, option


@dataclasses.dataclass(frozen=True)
class CarrySettings:
    """sae: the source model's SAE directory for s2l (stf_jax or sae-lens; it names the layer s2l reads);
    sae_k: coefficients a vector keeps (None: the SAE's own k); stack: source layers a many-to-one map reads,
    spread over depth (as `transfer fit --stack`)."""

    sae: str = ""
    sae_k: int | None = option(None, ge=1)
    stack: int = option(6, ge=2)

    def __post_init__(self):
        check_options(self)


CARRY_FLAGS = {
    "sae": "s2l: the source model's SAE directory (python -m stf_jax.sae train); s2l reads the SAE's layer",
    "sae_k": "s2l: SAE coefficients kept per vector [the SAE's k]",
    "stack": "many_to_one: source layers read together, spread over depth",
}

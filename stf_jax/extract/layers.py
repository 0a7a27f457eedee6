"""Deprecated name of `stf_jax.core.layers` (the layer-spec grammar moved to the shared floor)."""

from .. import _moved

_moved(__name__, "stf_jax.core.layers")

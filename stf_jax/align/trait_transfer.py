"""Deprecated name of `stf_jax.align.carry_traits` (trait vectors carried by each map)."""

from .. import _moved

_moved(__name__, "stf_jax.align.carry_traits")

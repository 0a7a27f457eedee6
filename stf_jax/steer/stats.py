"""Deprecated name of `stf_jax.core.stats` (bootstrap intervals moved to the shared floor)."""

from .. import _moved

_moved(__name__, "stf_jax.core.stats")

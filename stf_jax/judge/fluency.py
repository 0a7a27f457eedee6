"""Deprecated name of `stf_jax.steer.fluency` (the fluency guard is a steering measure: `steer calibrate`
uses it, and the judges above it)."""

from .. import _moved

_moved(__name__, "stf_jax.steer.fluency")

"""Deprecated name of `stf_jax.extract.rundir` (the run-directory reader every stage uses sits with the store)."""

from .. import _moved

_moved(__name__, "stf_jax.extract.rundir")

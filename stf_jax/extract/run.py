"""Deprecated name of `stf_jax.extract.driver` (the extraction driver; "run" names the run directory)."""

from .. import _moved

_moved(__name__, "stf_jax.extract.driver")

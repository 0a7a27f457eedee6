"""Deprecated name of `stf_jax.experiment` (the experiment pipeline). `python -m stf_jax.run CONFIG` still
runs it: this package's `__main__` is the experiment's."""

from .. import _moved

_moved(__name__, "stf_jax.experiment")

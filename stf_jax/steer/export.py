"""Deprecated: the control-vector format moved to `stf_jax.core.vectorfile`, and vectors are held as
`stf_jax.SteeringVector` (`SteeringVector.load(path)`, `.save(path)`). These names stay importable."""

import warnings

from ..core.vectorfile import *  # noqa: F401,F403
from ..core.vectorfile import VectorFile as ControlVector  # noqa: F401
from ..core.vectorfile import read_control_vector as load_control_vector  # noqa: F401
from ..core.vectorfile import write_vector_file as export_control_vector  # noqa: F401

warnings.warn("stf_jax.steer.export moved: use stf_jax.SteeringVector (.load, .save) or stf_jax.core.vectorfile",
              DeprecationWarning, stacklevel=2)

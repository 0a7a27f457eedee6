"""Steering: injection modes as Intervention data, and behavioural metrics (propensity)."""

from .inject import MODES, make_intervention, position_mask
from .propensity import mean_logprobs, propensity

__all__ = ["MODES", "make_intervention", "mean_logprobs", "position_mask", "propensity"]

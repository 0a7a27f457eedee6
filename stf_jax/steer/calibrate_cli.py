"""`python -m stf_jax.steer calibrate`: the layer and strength for a vector, chosen and stored in the file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..options import add_fields, fields_from_args
from .calibration import CalibrateOptions

HELPS = {"strengths": "strength grid in units of the layer's typical |h| (each tried at + and -)",
         "n_pairs": "held-out pairs scored per grid point",
         "n_prompts": "fluency prompts completed per grid point and sign",
         "max_new_tokens": "tokens per fluency completion",
         "max_logprob_drop": "fluency guard: largest drop of the unsteered model's log-prob (nats/token)",
         "max_repetition_rise": "fluency guard: largest rise of the repeated word 3-gram share",
         "chat_template": "complete the fluency prompts inside the model's chat template (when it has one)",
         "bootstrap": "bootstrap resamples of the effect's interval", "seed": "bootstrap seed"}


def add_calibrate_parser(sub) -> argparse.ArgumentParser:
    cal = sub.add_parser("calibrate", help="choose layer and strength for a vector (effect on held-out pairs, "
                                           "fluency guard); write it with that strength stored",
                         description=__doc__ + "\n\n" + _DETAILS, formatter_class=argparse.RawDescriptionHelpFormatter)
    cal.add_argument("--model", required=True, help="registry name, HF directory or .gguf path")
    cal.add_argument("--vector", required=True, help="a control vector (.gguf/.safetensors: llama.cpp, repeng, "
                                                     "stf_jax), a run's layer_<idx>.safetensors (with --trait), or "
                                                     "a .npy (with --layers)")
    cal.add_argument("--trait", help="the trait the vector steers: its held-out pairs are scored [the vector's]")
    cal.add_argument("--pairs", help="held-out contrast pairs (a dataset name or file) [shipped, the trait's test "
                                     "split]")
    cal.add_argument("--layers", help="candidate HF layers (12, -6, 0.67, 10:20, all) [the vector's own, at most 6]")
    cal.add_argument("--out", required=True, help="output directory: calibration.json/.md/.png and the vector")
    cal.add_argument("--force", action="store_true",
                     help="calibrate a vector whose file names another model (its name or model hint)")
    cal.add_argument("--name", default="calibrated.gguf",
                     help="file name of the calibrated vector in --out (.gguf or .safetensors) [calibrated.gguf]")
    add_fields(cal, CalibrateOptions, HELPS)
    return cal


_DETAILS = """For each candidate layer the vector's direction is added at a × typical|h| (a on the grid, both signs,
at every token, as llama.cpp does). Measured at each point: the propensity effect on held-out pairs of the
trait (with a 95% bootstrap interval) and the fluency guard on greedy completions of fixed prompts.
Chosen: per layer the largest a with an effect interval above 0 while it and every smaller a pass the guard
at +a and -a; over layers, the largest effect there. The saved vector holds that layer at a × typical|h|, so
  llama-completion -m MODEL.gguf --control-vector-scaled OUT/calibrated.gguf:1 -p "..."
  python -m stf_jax.steer generate --model M --vector OUT/calibrated.gguf --alpha 1 "..."
give the calibrated steering. Exit 1 when no grid point passes (the table says why).

  python -m stf_jax.steer calibrate --model smollm2-135m --vector formality.gguf --trait formality --out cal/"""


def run_calibrate(args) -> int:
    from ..core.layers import parse_layer_spec
    from ..errors import SteeringInputError
    from ..models.loading import load_model
    from .calibration import calibrate
    from .vectors import load_vector

    options = CalibrateOptions(**fields_from_args(args, HELPS))  # checked before the model loads
    if args.layers is not None:
        parse_layer_spec(args.layers)
    if Path(args.name).name != args.name or Path(args.name).suffix not in (".gguf", ".safetensors"):
        raise SteeringInputError(f"--name {args.name!r}: give a file name ending in .gguf or .safetensors")
    npy = Path(args.vector).suffix == ".npy"
    if npy and args.layers is None:
        raise SteeringInputError("--layers is required for a .npy vector (its one HF layer, e.g. 14)")
    vector = None if npy else load_vector(args.vector, args.trait)  # a bad file fails before the model loads
    model = load_model(args.model)
    if npy:
        from ..core.layers import resolve_layer

        layer = resolve_layer(args.layers, model.config.n_layers, args.model, flag="--layers")
        vector = load_vector(args.vector, args.trait, layer)
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    cal = calibrate(model, vector, args.pairs, args.trait, args.layers, options, log=log, force=args.force)
    written = cal.save(args.out, args.name)
    print(cal.markdown())
    print("wrote " + ", ".join(str(p) for p in written))
    return 0 if cal.layer is not None else 1

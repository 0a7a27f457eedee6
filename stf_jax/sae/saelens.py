"""SAE directories in sae-lens' layout, both ways: a stf_jax SAE *is* an sae-lens directory.

sae-lens is what people train and load sparse autoencoders with, so its on-disk layout is the one users
already read; stf_jax writes the same thing rather than a format of its own:

    <dir>/cfg.json                  sae-lens' config (v6): d_in, d_sae, architecture, k (topk), ...,
                                    metadata {model_name, hook_name, ..., stf_jax: {our own fields}}
    <dir>/sae_weights.safetensors   W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in]

`save_sae` writes one that `sae_lens.SAE.load_from_disk` loads as a TopKSAE or StandardSAE encoding
exactly as `model.encode` does; `load_sae` reads ours and sae-lens' own (its "standard" and "topk"
architectures). sae-lens' options that change the encoder in ways that are linear in the weights are folded
into the weights on load, so the loaded SAE encodes raw activations as sae-lens does:

    apply_b_dec_to_input = false           b_enc += b_dec @ W_enc     (our encoder always subtracts b_dec)
    rescale_acts_by_decoder_norm = true    W_enc *= |W_dec_i|, b_enc *= |W_dec_i|, W_dec_i /= |W_dec_i|

Options that are not (a per-token input normalization, a scale that was never folded in, attention-head
reshaping) are refused with a one-line `SAEFileError`, as are damaged files. Nothing here imports torch or
sae-lens: the weights are read by safetensors' flax loader (bfloat16 and float16 included) and written with
its numpy API, always float32.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from ..core.atomic import atomic_save_tensors, atomic_write_json, fsync_dir, tmp_path
from ..errors import UserError
from .model import ARCHITECTURES, SAEConfig, SAEParams

CFG_FILENAME = "cfg.json"  # sae_lens.constants.SAE_CFG_FILENAME
WEIGHTS_FILENAME = "sae_weights.safetensors"  # sae_lens.constants.SAE_WEIGHTS_FILENAME
# the cfg layout written: sae-lens reads a cfg without metadata.sae_lens_version >= 6 as a pre-6 one
SAE_LENS_FORMAT_VERSION = "6.0.0"
STF_JAX_KEY = "stf_jax"  # our own fields, inside sae-lens' metadata
OUR_FIELDS = ("architecture", "k", "l1_coefficient", "aux_k", "aux_coefficient", "model", "layer")
TENSORS = ("W_enc", "b_enc", "W_dec", "b_dec")
_HOOK = re.compile(r"blocks\.(\d+)\.hook_resid_(pre|post)")


class SAEFileError(UserError, ValueError):
    """An SAE directory that cannot be read or written as given (one line: what, where, how to fix)."""


def hook_name(layer: int) -> str:
    """TransformerLens' name for the residual stream entering block `layer` (what `SAEConfig.layer` means)."""
    return f"blocks.{layer}.hook_resid_pre"


def layer_of_hook(name: Any) -> int:
    """`SAEConfig.layer` for a TransformerLens hook name: blocks.L.hook_resid_pre -> L, blocks.L.hook_resid_post
    -> L + 1 (the stream entering the next block); -1 for anything else (not a residual stream we index)."""
    m = _HOOK.fullmatch(name) if isinstance(name, str) else None
    if m is None:
        return -1
    return int(m.group(1)) + (m.group(2) == "post")


# ----------------------------------------------------------------------------------------------- save


def save_sae(out_dir: str | Path, cfg: SAEConfig, params: SAEParams, metadata: dict | None = None) -> Path:
    """Write the SAE to `out_dir` as an sae-lens directory (cfg.json + sae_weights.safetensors, float32).

    cfg.json's metadata carries sae-lens' model_name and hook_name (from cfg.model and cfg.layer, when
    known) and a `stf_jax` object with our config fields and everything in `metadata` (training
    statistics, ...: JSON values; numpy and jax scalars and arrays are converted). The directory is built
    under a hidden temporary name beside `out_dir` and renamed into place: an error at any point leaves
    `out_dir` as it was and no temporary directory (a process killed mid-write leaves at most a hidden
    `.NAME.tmpPID`, or, between the two renames that replace an existing SAE, the old one as
    `.NAME.old.tmpPID`). An existing SAE directory at `out_dir` (one holding cfg.json or
    sae_weights.safetensors) is replaced as a whole; any other non-empty directory, or a file, is an
    error. Returns `out_dir`."""
    out_dir = Path(out_dir)
    arrays = _checked_arrays(cfg, params)
    cfg_json = _cfg_json(cfg, metadata)
    _check_target(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(out_dir)
    old = out_dir.with_name(f".{out_dir.name}.old.tmp{os.getpid()}")
    if old.exists():  # an earlier process with this id was killed mid-replacement: that may be the only copy
        raise SAEFileError(f"{old}: an earlier save of {out_dir} was interrupted and left the previous SAE there; "
                           f"move it back to {out_dir} (or delete it) and save again")
    shutil.rmtree(tmp, ignore_errors=True)  # a killed earlier process with this id
    try:
        tmp.mkdir()
        atomic_write_json(tmp / CFG_FILENAME, cfg_json, default=_json_default)
        atomic_save_tensors(tmp / WEIGHTS_FILENAME, arrays)
        if out_dir.is_dir() and any(out_dir.iterdir()):  # an SAE directory (_check_target): swap it out
            os.replace(out_dir, old)
            try:
                os.replace(tmp, out_dir)
            except BaseException:
                os.replace(old, out_dir)
                raise
        else:
            os.replace(tmp, out_dir)  # onto nothing, or onto an empty directory
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(out_dir.parent)
    return out_dir


def _check_target(out_dir: Path) -> None:
    if out_dir.is_dir():
        names = {p.name for p in out_dir.iterdir()}
        if names and not names & {CFG_FILENAME, WEIGHTS_FILENAME}:
            raise SAEFileError(f"{out_dir}: exists and is not an SAE directory (no {CFG_FILENAME} or "
                               f"{WEIGHTS_FILENAME}); choose another directory or empty this one")
    elif out_dir.exists():
        raise SAEFileError(f"{out_dir}: is a file, not a directory; choose a directory path for the SAE")


def _checked_arrays(cfg: SAEConfig, params: SAEParams) -> dict[str, np.ndarray]:
    want = _shapes(cfg.d_in, cfg.d_sae)
    out = {}
    for name in TENSORS:
        a = np.asarray(getattr(params, name), np.float32)
        if a.shape != want[name]:
            raise ValueError(f"params.{name} has shape {list(a.shape)}, the config (d_in= {cfg.d_in}, "
                             f"d_sae= {cfg.d_sae}) needs {list(want[name])}; pass the config the SAE was built with")
        if not np.isfinite(a).all():
            raise ValueError(f"params.{name} has non-finite values (NaN or inf); an SAE that diverged in "
                             "training cannot be saved, retrain it (e.g. with a lower learning rate)")
        out[name] = a
    return out


def _cfg_json(cfg: SAEConfig, metadata: dict | None) -> dict[str, Any]:
    ours = {name: getattr(cfg, name) for name in OUR_FIELDS}
    extra = dict(metadata or {})
    clash = sorted(set(extra) & set(ours) | {k for k in extra if not isinstance(k, str)}, key=str)
    if clash:
        raise ValueError(f"metadata= has keys {clash} that are not strings or are the SAE's own config fields "
                         f"({', '.join(OUR_FIELDS)}); rename them")
    lens_meta: dict[str, Any] = {"sae_lens_version": SAE_LENS_FORMAT_VERSION}
    if cfg.model:
        lens_meta["model_name"] = cfg.model
    if cfg.layer >= 0:
        lens_meta["hook_name"] = hook_name(cfg.layer)
    lens_meta[STF_JAX_KEY] = {**ours, **extra}
    out: dict[str, Any] = {"architecture": cfg.architecture, "d_in": cfg.d_in, "d_sae": cfg.d_sae}
    if cfg.architecture == "topk":
        out.update(k=cfg.k, rescale_acts_by_decoder_norm=False)
    out.update(dtype="float32", device="cpu", apply_b_dec_to_input=True, normalize_activations="none",
               reshape_activations="none", metadata=lens_meta)
    return out


def _json_default(obj: Any) -> Any:
    """numpy / jax scalars and arrays in `metadata` as JSON numbers and lists."""
    if hasattr(obj, "__array__"):
        a = np.asarray(obj)
        return a.item() if a.ndim == 0 else a.tolist()
    raise TypeError(f"metadata= value of type {type(obj).__name__} is not JSON (numbers, strings, lists, dicts)")


# ----------------------------------------------------------------------------------------------- load


def load_sae(path: str | Path) -> tuple[SAEConfig, SAEParams, dict[str, Any]]:
    """Read an SAE directory written by `save_sae` or by sae-lens ("standard" or "topk"): its config,
    float32 parameters and metadata (sae-lens' metadata, merged with our `stf_jax` object). sae-lens'
    apply_b_dec_to_input=false and rescale_acts_by_decoder_norm=true are folded into the weights (the
    result encodes as sae-lens does). Anything unreadable or inconsistent is a one-line SAEFileError."""
    path = Path(path)
    if not path.is_dir():
        what = "is a file, not an SAE directory" if path.exists() else "no such SAE directory"
        raise SAEFileError(f"{path}: {what}; give the directory holding {CFG_FILENAME} and {WEIGHTS_FILENAME}")
    raw = _read_cfg(path / CFG_FILENAME)
    lens_meta = raw.get("metadata")
    lens_meta = dict(lens_meta) if isinstance(lens_meta, dict) else {}
    ours = lens_meta.pop(STF_JAX_KEY, None)
    ours = dict(ours) if isinstance(ours, dict) else {}
    where = path / CFG_FILENAME

    arch = _architecture(raw, where)
    d_in, d_sae = (_positive_int(raw, name, where) for name in ("d_in", "d_sae"))
    k = _positive_int(raw, "k", where) if arch == "topk" else None
    if k is not None and k > d_sae:
        raise SAEFileError(f"{where}: k= {k} is more than the {d_sae} latents (d_sae); set k <= d_sae")
    _check_encoder_options(raw, where)
    for name, value in (("architecture", arch), ("k", k)):
        if name in ours and value is not None and ours[name] != value:
            raise SAEFileError(f"{where}: {name}= {value!r} but metadata.{STF_JAX_KEY}.{name} is {ours[name]!r}; "
                               "edit one so they agree (sae-lens reads the first)")

    arrays = _read_weights(path / WEIGHTS_FILENAME, d_in, d_sae)
    arrays = _fold(raw, arrays)

    model = ours.get("model", _lens_value(raw, lens_meta, "model_name") or "")
    layer = ours.get("layer", layer_of_hook(_lens_value(raw, lens_meta, "hook_name")))
    fields: dict[str, Any] = dict(d_in=d_in, d_sae=d_sae, architecture=arch, model=model, layer=layer)
    if k is not None:
        fields["k"] = k
    elif "k" in ours:
        fields["k"] = ours["k"]
    fields.update({name: ours[name] for name in ("l1_coefficient", "aux_k", "aux_coefficient") if name in ours})
    try:
        cfg = SAEConfig(**fields)
    except (ValueError, TypeError) as e:
        raise SAEFileError(f"{where}: {' '.join(str(e).split())}; fix that field") from None
    params = SAEParams(**{name: jnp.asarray(arrays[name]) for name in TENSORS})
    return cfg, params, {**lens_meta, **ours}


def _read_cfg(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SAEFileError(f"{path}: missing; an SAE directory needs {CFG_FILENAME} beside {WEIGHTS_FILENAME} "
                           "(save it again with save_sae or sae-lens' save_model)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SAEFileError(f"{path}: not valid JSON ({' '.join(str(e).split())}); restore the file or save "
                           "the SAE again") from None
    if not isinstance(raw, dict):
        raise SAEFileError(f"{path}: holds a JSON {type(raw).__name__}, not an object of SAE settings; "
                           "restore the file or save the SAE again")
    return raw


def _architecture(raw: dict, where: Path) -> str:
    arch = raw.get("architecture")
    if arch is None:  # a pre-6 sae-lens cfg: the activation said it
        act = raw.get("activation_fn", raw.get("activation_fn_str", "relu"))
        kwargs = raw.get("activation_fn_kwargs")
        if act == "topk" and isinstance(kwargs, dict) and "k" in kwargs:
            raw["k"] = kwargs["k"]
            arch = "topk"
        elif act == "relu":
            arch = "standard"
        else:
            raise SAEFileError(f"{where}: activation_fn {act!r} is not supported; stf_jax reads sae-lens' "
                               "ReLU ('standard') and TopK SAEs")
    if arch not in ARCHITECTURES:
        raise SAEFileError(f"{where}: architecture {arch!r} is not supported; stf_jax reads sae-lens' "
                           f"{' and '.join(map(repr, ARCHITECTURES))} SAEs")
    return arch


def _positive_int(raw: dict, name: str, where: Path) -> int:
    if name not in raw:
        raise SAEFileError(f"{where}: no {name!r}; an sae-lens cfg.json names d_in, d_sae (and k for topk), "
                           "restore the file or save the SAE again")
    value = raw[name]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SAEFileError(f"{where}: {name}= {value!r:.40} is not a positive integer; fix that field")
    return value


def _check_encoder_options(raw: dict, where: Path) -> None:
    """sae-lens settings our encoder cannot fold into the weights."""
    norm = raw.get("normalize_activations", "none")
    norm = {False: "none", None: "none", True: "expected_average_only_in"}.get(norm, norm)  # pre-6 spellings
    if norm in ("constant_norm_rescale", "layer_norm"):
        raise SAEFileError(f"{where}: normalize_activations= {norm!r} normalizes every token at run time, which "
                           "stf_jax's encoder does not; use an SAE trained with normalize_activations='none'")
    if norm != "none":
        raise SAEFileError(f"{where}: normalize_activations= {norm!r}: the weights expect activations normalized "
                           "by statistics the file does not hold; fold them in with sae-lens "
                           "(fold_activation_norm_scaling_factor / fold_activation_whitening) and save again")
    if raw.get("reshape_activations", "none") not in ("none", None):
        raise SAEFileError(f"{where}: reshape_activations= {raw['reshape_activations']!r}: this SAE reads attention "
                           "heads, stf_jax SAEs read the residual stream; use a residual-stream SAE")


def _lens_value(raw: dict, lens_meta: dict, name: str) -> Any:
    """A metadata field, from sae-lens 6's metadata object or a pre-6 cfg's top level (hook_point then)."""
    if name in lens_meta:
        return lens_meta[name]
    return raw.get(name, raw.get("hook_point") if name == "hook_name" else None)


def _fold(raw: dict, a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """sae-lens' encoder options as weights of our encoder (float64 arithmetic, float32 result)."""
    a = {k: v.astype(np.float64) for k, v in a.items()}
    if raw.get("apply_b_dec_to_input", True) is False:  # pre = x @ W_enc + b_enc
        a["b_enc"] = a["b_enc"] + a["b_dec"] @ a["W_enc"]
    if raw.get("rescale_acts_by_decoder_norm") is True:  # pre *= |W_dec_i|; decode reads acts / |W_dec_i|
        norm = np.maximum(np.linalg.norm(a["W_dec"], axis=1), 1e-8)
        a["W_enc"], a["b_enc"], a["W_dec"] = a["W_enc"] * norm, a["b_enc"] * norm, a["W_dec"] / norm[:, None]
    return {k: v.astype(np.float32) for k, v in a.items()}


def _shapes(d_in: int, d_sae: int) -> dict[str, tuple[int, ...]]:
    return {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}


def _read_weights(path: Path, d_in: int, d_sae: int) -> dict[str, np.ndarray]:
    tensors = _read_safetensors(path)
    fix = "restore the file or save the SAE again"
    extra = sorted(set(tensors) - set(TENSORS))
    if "scaling_factor" in extra and np.all(tensors["scaling_factor"] == 1.0):
        extra.remove("scaling_factor")  # an all-ones factor older sae-lens versions wrote (it drops it too)
    if extra:
        raise SAEFileError(f"{path}: holds tensors {extra} beside {', '.join(TENSORS)}; this is not a plain "
                           "standard or topk SAE, which is all stf_jax reads")
    want = _shapes(d_in, d_sae)
    for name in TENSORS:
        if name not in tensors:
            raise SAEFileError(f"{path}: no tensor {name!r} (it holds {sorted(tensors)}); {fix}")
        if tensors[name].shape != want[name]:
            raise SAEFileError(f"{path}: {name} has shape {list(tensors[name].shape)}, cfg.json's d_in= {d_in}, "
                               f"d_sae= {d_sae} need {list(want[name])}; the weights and cfg.json are from "
                               f"different SAEs, {fix}")
        if not np.isfinite(tensors[name]).all():
            raise SAEFileError(f"{path}: {name} has non-finite values (NaN or inf); the SAE diverged or the file "
                               f"is damaged, {fix}")
    return {name: tensors[name] for name in TENSORS}


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file as float32 (read by safetensors itself, bfloat16 included through
    its flax loader); a truncated or damaged file, or a non-float tensor, is a SAEFileError naming it."""
    from safetensors import SafetensorError, safe_open

    fix = "restore the file or save the SAE again"
    if not path.is_file():
        raise SAEFileError(f"{path}: missing; an SAE directory needs {WEIGHTS_FILENAME} beside {CFG_FILENAME} "
                           "(save it again with save_sae or sae-lens' save_model)")
    out = {}
    try:
        with safe_open(str(path), framework="flax") as f:
            for name in f.keys():
                a = f.get_tensor(name)
                if not jnp.issubdtype(a.dtype, jnp.floating):
                    raise SAEFileError(f"{path}: tensor {name!r} is {a.dtype}, not a float type an SAE is stored in; "
                                       f"{fix}")
                out[name] = np.asarray(a).astype(np.float32)  # numpy: no JAX op (it may run inside a trace)
    except SafetensorError as exc:
        raise SAEFileError(f"{path}: truncated, damaged or not a safetensors file ({exc}); {fix}") from None
    return out

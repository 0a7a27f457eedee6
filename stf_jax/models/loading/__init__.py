"""`load_model`: registry name, HF directory, hub id or GGUF file -> a ready `Model`.

GGUF files are converted once (dequantized weights, tokenizer rebuilt from metadata) into a
Hugging Face directory under the cache, so later loads are plain safetensors reads. Nothing here
imports torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from ..config import config_from_hf, unknown_keys
from ..model import Model
from ..params import canonical_to_hf, fuse_for_hf, to_flax
from ..registry import cache_dir, registry, resolve
from .hf_dir import read_weights, resolve_hub

log = logging.getLogger(__name__)
CACHE_FORMAT = 1


def load_tokenizer(model_dir: Path):
    """A transformers fast tokenizer from tokenizer.json (+ tokenizer_config.json), torch-free."""
    from transformers import PreTrainedTokenizerFast

    if not (model_dir / "tokenizer.json").exists():
        raise FileNotFoundError(
            f"{model_dir}: no tokenizer.json (stf_jax needs a fast tokenizer file next to config.json)"
        )
    return PreTrainedTokenizerFast.from_pretrained(str(model_dir))


def load_hf_dir(model_dir: str | Path, dtype=jnp.float32, name: str | None = None) -> Model:
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{model_dir}: no config.json (a model directory needs config.json + *.safetensors)")
    hf = json.loads(config_path.read_text())
    cfg = config_from_hf(hf, str(config_path))
    extra = unknown_keys(hf)
    if extra:
        log.warning("%s: config keys not used by stf_jax: %s", config_path, ", ".join(extra))
    with ThreadPoolExecutor(1) as pool:  # the tokenizer parses while the weights are placed
        tokenizer = pool.submit(load_tokenizer, model_dir)
        params = to_flax(cfg, read_weights(model_dir, cfg), dtype, source=str(model_dir))
        return Model(config=cfg, params=params, tokenizer=tokenizer.result(), dtype=jnp.dtype(dtype),
                     name=name or model_dir.name, path=str(model_dir))


def _gguf_cache_dir(path: Path) -> Path:
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{CACHE_FORMAT}"
    return cache_dir() / "converted" / f"{path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def convert_gguf(path: str | Path, progress: bool = True) -> Path:
    """Convert a GGUF file into a cached HF directory (f32 safetensors + tokenizer.json); idempotent.

    Written into `<dir>.tmp<pid>` and renamed when complete; a failure removes it, and partial directories of
    killed conversions are removed on the next conversion."""
    from ...locks import CacheLock

    path = Path(path)
    out = _gguf_cache_dir(path)
    if (out / "stf_jax_source.json").exists():
        return out
    with CacheLock(out):  # another process converting the same file: wait for it, then use its result
        if not (out / "stf_jax_source.json").exists():
            _convert_locked(path, out, progress)
    return out


def _convert_locked(path: Path, out: Path, progress: bool) -> None:
    from .gguf_file import read_gguf

    hf, flat, meta = read_gguf(path, progress=progress)
    cfg = config_from_hf(hf, str(path))
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    _remove_stale_conversions(out)
    shutil.rmtree(tmp, ignore_errors=True)
    try:  # a failed conversion leaves nothing behind in the cache (it used to leave a partial directory)
        _convert_into(tmp, path, hf, flat, meta, cfg)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_stale_conversions(out: Path) -> None:
    """Partial directories `<out>.tmp<pid>` of conversions whose process is gone (killed mid-conversion)."""
    for stale in out.parent.glob(out.name + ".tmp*"):
        try:
            pid = int(stale.name.rsplit(".tmp", 1)[1])
            os.kill(pid, 0)
        except ValueError:
            continue
        except ProcessLookupError:
            shutil.rmtree(stale, ignore_errors=True)
        except PermissionError:
            pass


def _convert_into(tmp: Path, path: Path, hf, flat, meta, cfg) -> None:
    from safetensors.numpy import save_file
    from transformers import PreTrainedTokenizerFast

    from .gguf_tokenizer import tokenizer_from_gguf

    tmp.mkdir(parents=True)
    save_file({canonical_to_hf(k, cfg): np.ascontiguousarray(v) for k, v in fuse_for_hf(cfg, flat).items()},
              str(tmp / "model.safetensors"), metadata={"format": "pt"})
    tok, tok_cfg = tokenizer_from_gguf(meta)
    chat_template = tok_cfg.pop("chat_template")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **{k: v for k, v in tok_cfg.items() if v is not None})
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(str(tmp))
    eos = meta.get("tokenizer.ggml.eos_token_id")
    hf |= {"bos_token_id": meta.get("tokenizer.ggml.bos_token_id"), "eos_token_id": eos,
           "pad_token_id": meta.get("tokenizer.ggml.padding_token_id")}
    (tmp / "config.json").write_text(json.dumps(hf, indent=2))
    (tmp / "stf_jax_source.json").write_text(json.dumps({"gguf": str(path.resolve()), "format": CACHE_FORMAT}))


def load_model(name_or_path: str | os.PathLike, dtype="float32", progress: bool = True) -> Model:
    """Load a model by registry name, HF directory, hub repo id or GGUF path.

    dtype: "float32" or "bfloat16" parameters (norms and softmax always run in f32).
    """
    dtype = jnp.dtype(dtype)
    if dtype not in (jnp.float32, jnp.bfloat16):
        raise ValueError(f"dtype must be float32 or bfloat16, got {dtype}")
    name = str(name_or_path)
    display = name
    if name in registry():
        name = resolve(name)
    path = Path(name)
    t0 = time.perf_counter()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"{path}: GGUF file not found")
        model = load_hf_dir(convert_gguf(path, progress=progress), dtype, name=display)
    elif path.is_dir():
        model = load_hf_dir(path, dtype, name=display)
    elif path.exists():
        raise ValueError(f"{path}: not a model directory or .gguf file")
    elif "/" in name and not name.startswith((".", "/")):
        model = load_hf_dir(resolve_hub(name), dtype, name=display)
    else:
        raise FileNotFoundError(
            f"{display!r} is not a known model name, a model directory, a .gguf file or a hub id; "
            f"known models: {', '.join(sorted(registry()))}"
        )
    log.info("loaded %s in %.1fs", display, time.perf_counter() - t0)
    return model

"""Load a Hugging Face model directory (config.json, tokenizer files, *.safetensors) with numpy.

Safetensors files are memory-mapped and viewed as numpy arrays (bf16 through ml_dtypes, which
`safetensors.numpy` cannot represent), so nothing is copied until a weight is placed on a device.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Iterator

import ml_dtypes
import numpy as np

from ..config import DecoderConfig
from ..params import WeightError, hf_to_canonical, split_fused, transpose_conv1d

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


def iter_safetensors(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(name, array view) for every tensor of one safetensors file; clear errors on damage."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise WeightError(f"{path}: truncated safetensors file (no header)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise WeightError(f"{path}: truncated safetensors file (header claims {n} bytes, file has {size})")
        try:
            header = json.loads(f.read(n))
        except json.JSONDecodeError as e:
            raise WeightError(f"{path}: corrupt safetensors header ({e})") from None
    header.pop("__metadata__", None)
    end = max((info["data_offsets"][1] for info in header.values()), default=0)
    if 8 + n + end > size:
        raise WeightError(
            f"{path}: truncated safetensors file: tensors need {8 + n + end} bytes but the file has {size}; "
            "re-download this shard"
        )
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n, shape=(end,)) if end else np.zeros(0, np.uint8)
    for name, info in header.items():
        if info["dtype"] not in _DTYPES:
            raise WeightError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        start, stop = info["data_offsets"]
        yield name, data[start:stop].view(_DTYPES[info["dtype"]]).reshape(info["shape"])


def safetensors_files(model_dir: Path) -> list[Path]:
    """The weight files of a model directory, following a sharded index when there is one."""
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [s for s in shards if not (model_dir / s).exists()]
        if missing:
            raise WeightError(f"{index}: shard(s) listed in the index are missing: {', '.join(missing)}")
        return [model_dir / s for s in shards]
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise WeightError(f"{model_dir}: no *.safetensors weights found (only safetensors checkpoints are supported)")
    return files


def read_weights(model_dir: Path, cfg: DecoderConfig) -> dict[str, np.ndarray]:
    """Canonical-name numpy views of every decoder weight in the directory."""
    flat: dict[str, np.ndarray] = {}
    for file in safetensors_files(model_dir):
        for name, arr in iter_safetensors(file):
            canon = hf_to_canonical(name, cfg)
            if canon is not None:
                flat[canon] = arr
    return split_fused(cfg, transpose_conv1d(cfg, flat))  # fused GPT-NeoX / GPT-2 / Phi-3 tensors


def resolve_hub(repo_id: str) -> Path:
    """A hub repo id -> local snapshot (cache first, then network if there is one)."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "tokenizer.model", "*.jinja"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:
        pass
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as e:
        raise FileNotFoundError(
            f"{repo_id!r} is not a local directory or GGUF file, and the Hugging Face hub could not provide it "
            f"({type(e).__name__}: {e}). Download it where you have network (huggingface-cli download {repo_id}) "
            "or pass a local model directory."
        ) from None

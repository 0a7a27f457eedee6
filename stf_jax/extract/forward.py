"""The extraction forward pass: jitted, pooled inside the program, data-parallel over devices.

A 1-D (or data x model) `Mesh` over the local devices; batches are sharded along "data", parameters
are replicated, or split along heads / MLP width over "model" for models that do not fit one device.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ..models import decoder
from ..models.model import Model


def slot_ends(segments, slots: int):
    """Index of the last token of each packed text: segments [B, S] (0 padding, k >= 1 the row's k-th text)
    -> [B, slots] int (0 for an empty slot)."""
    hit = segments[:, :, None] == jnp.arange(1, slots + 1)  # [B, S, slots]
    return jnp.max(jnp.where(hit, jnp.arange(segments.shape[1])[None, :, None], 0), axis=1)


def last_positions(segments, slots: int = 1, back: int = 1):
    """Position of each packed text's last real token (`back` = 2: the one before it) -> [B, slots] int."""
    return jnp.maximum(slot_ends(segments, slots) - (back - 1), 0)


def pool_last(h, segments, slots: int = 1, back: int = 1):
    """Last real token of each packed text (`back` = 2: the one before it). h: [B, S, D], segments: [B, S]
    -> [B, slots, D] f32."""
    return decoder.take_positions(h, last_positions(segments, slots, back)).astype(jnp.float32)


def pool_letter(h, segments, slots: int = 1):
    """The token before the last: the answer letter of an A/B item that ends "(A)" (tokenized " (", "A", ")"),
    the position Contrastive Activation Addition reads its vectors at. -> [B, slots, D] f32."""
    return pool_last(h, segments, slots, back=2)


def pool_mean(h, segments, slots: int = 1):
    """Mean over each packed text's tokens. -> [B, slots, D] f32."""
    weights = (segments[:, :, None] == jnp.arange(1, slots + 1)).astype(jnp.float32)  # [B, S, slots]
    sums = jnp.einsum("bsd,bsp->bpd", h.astype(jnp.float32), weights, precision=jax.lax.Precision.HIGHEST)
    return sums / jnp.maximum(weights.sum(axis=1), 1.0)[..., None]


def pool_tokens(h, segments, slots: int = 1):
    """Every position (the host keeps the real tokens; rows are not packed). -> [B, S, D] f32."""
    return h.astype(jnp.float32)


POOLINGS = {"last": pool_last, "letter": pool_letter, "mean": pool_mean, "tokens": pool_tokens}
# Poolings that read fixed positions: the forward's last block computes only those (`Decoder.final_positions`).
POOLED_POSITIONS = {"last": last_positions, "letter": partial(last_positions, back=2)}


def make_mesh(model_parallel: int = 1, devices=None) -> Mesh:
    devices = list(devices if devices is not None else jax.local_devices())
    if len(devices) % model_parallel:
        raise ValueError(f"model_parallel= {model_parallel} does not divide the {len(devices)} local devices")
    grid = np.array(devices).reshape(len(devices) // model_parallel, model_parallel)
    return Mesh(grid, ("data", "model"))


# Parameter sharding over "model": attention heads and MLP width (the Megatron split).
_MODEL_AXIS_RULES = {
    ("attn", "q", "kernel"): P(None, None, "model"),
    ("attn", "k", "kernel"): P(None, None, "model"),
    ("attn", "v", "kernel"): P(None, None, "model"),
    ("attn", "o", "kernel"): P(None, "model", None),
    ("mlp", "gate", "kernel"): P(None, None, "model"),
    ("mlp", "up", "kernel"): P(None, None, "model"),
    ("mlp", "down", "kernel"): P(None, "model", None),
}


def shard_params(params, mesh: Mesh):
    """Place parameters: replicated, except head/MLP dims over "model" when that axis is > 1."""
    split = mesh.shape["model"] > 1

    def spec(path, leaf):
        keys = tuple(getattr(k, "key", str(k)) for k in path)
        if split and keys[0] == "layers" and keys[1:] in _MODEL_AXIS_RULES:
            return NamedSharding(mesh, _MODEL_AXIS_RULES[keys[1:]])
        return NamedSharding(mesh, P())

    shardings = jax.tree_util.tree_map_with_path(spec, params)
    return jax.device_put(params, shardings)


_JITTED: dict = {}


def _jitted(cfg, layers: tuple[int, ...], dtype, pooling: str, slots: int):
    """One jitted forward per (config, layers, dtype, pooling, slots), so a second extraction in the same
    process (another run directory, a resumed or corpus run) reuses the compiled programs."""
    key = (cfg, layers, str(dtype), pooling, slots)
    at = POOLED_POSITIONS.get(pooling)
    fn = partial(decoder.hidden_states, cfg=cfg, layers=layers, dtype=dtype,
                 collect=partial(POOLINGS[pooling], slots=slots),
                 final_positions=None if at is None else partial(at, slots=slots))
    try:
        hash(key)
    except TypeError:  # an unhashable config: no reuse
        return jax.jit(fn)
    if key not in _JITTED:
        _JITTED[key] = jax.jit(fn)
    return _JITTED[key]


class PooledForward:
    """Callable (ids, segments) -> pooled states [n_layers, B, slots, D] (or [n_layers, B, S, D] for tokens);
    segments [B, S]: 0 padding, k >= 1 the row's k-th packed text (a 0/1 mask: one text per row)."""

    def __init__(self, model: Model, layers: tuple[int, ...], pooling: str, mesh: Mesh, dtype=None, slots: int = 1):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r} is not one of {', '.join(POOLINGS)}")
        self.mesh = mesh
        self.data_size = mesh.shape["data"]
        self.batch_sharding = NamedSharding(mesh, P("data", None))
        self.params = shard_params(model.params, mesh)
        self._fn = _jitted(model.config, tuple(layers), jnp.dtype(dtype or model.dtype), pooling, slots)

    def __call__(self, input_ids: np.ndarray, segments: np.ndarray) -> jax.Array:
        ids = jax.device_put(input_ids, self.batch_sharding)
        segments = jax.device_put(segments, self.batch_sharding)
        return self._fn(self.params, ids, segments)  # asynchronous: the host moves on while devices work

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


def pool_last(h, mask, back: int = 1):
    """Last real token of each right-padded row (`back` = 2: the one before it). h: [B, S, D], mask: [B, S]
    -> [B, D] f32."""
    last = jnp.maximum(mask.sum(axis=-1) - back, 0)
    return jnp.take_along_axis(h, last[:, None, None], axis=1)[:, 0].astype(jnp.float32)


def pool_letter(h, mask):
    """The token before the last: the answer letter of an A/B item that ends "(A)" (tokenized " (", "A", ")"),
    the position Contrastive Activation Addition reads its vectors at. -> [B, D] f32."""
    return pool_last(h, mask, back=2)


def pool_mean(h, mask):
    """Mean over real tokens. -> [B, D] f32."""
    m = mask[..., None].astype(jnp.float32)
    return (h.astype(jnp.float32) * m).sum(axis=1) / jnp.maximum(m.sum(axis=1), 1.0)


def pool_tokens(h, mask):
    """Every position (the host keeps the real tokens). -> [B, S, D] f32."""
    return h.astype(jnp.float32)


POOLINGS = {"last": pool_last, "letter": pool_letter, "mean": pool_mean, "tokens": pool_tokens}


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


def _jitted(cfg, layers: tuple[int, ...], dtype, pooling: str):
    """One jitted forward per (config, layers, dtype, pooling), so a second extraction in the same process
    (another run directory, a resumed or corpus run) reuses the compiled programs."""
    key = (cfg, layers, str(dtype), pooling)
    try:
        hash(key)
    except TypeError:  # an unhashable config: no reuse
        return jax.jit(partial(decoder.hidden_states, cfg=cfg, layers=layers, dtype=dtype, collect=POOLINGS[pooling]))
    if key not in _JITTED:
        _JITTED[key] = jax.jit(partial(decoder.hidden_states, cfg=cfg, layers=layers, dtype=dtype,
                                       collect=POOLINGS[pooling]))
    return _JITTED[key]


class PooledForward:
    """Callable (ids, mask) -> pooled states [n_layers, B, D] (or [n_layers, B, S, D] for tokens)."""

    def __init__(self, model: Model, layers: tuple[int, ...], pooling: str, mesh: Mesh, dtype=None):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r} is not one of {', '.join(POOLINGS)}")
        self.mesh = mesh
        self.data_size = mesh.shape["data"]
        self.batch_sharding = NamedSharding(mesh, P("data", None))
        self.params = shard_params(model.params, mesh)
        self._fn = _jitted(model.config, tuple(layers), jnp.dtype(dtype or model.dtype), pooling)

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> jax.Array:
        ids = jax.device_put(input_ids, self.batch_sharding)
        mask = jax.device_put(attention_mask, self.batch_sharding)
        return self._fn(self.params, ids, mask)  # asynchronous: the host moves on while devices work

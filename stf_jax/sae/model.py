"""A sparse autoencoder over one layer's residual stream: parameters, encoder, decoder, losses.

The parameter names, shapes and encoder are sae-lens' (so its files load both ways, `sae.saelens`):

    W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in]
    pre   = (x - b_dec) @ W_enc + b_enc
    acts  = relu(pre)                                   standard (ReLU + L1)
          = relu(the k largest of pre), 0 elsewhere     topk
    x_hat = acts @ W_dec + b_dec

Training runs on activations scaled so their mean norm is sqrt(d_in) (one number per SAE, measured on the
corpus: the same learning rate then suits smollm2's |h| of ~40 and gemma3's of ~4,000); the scale is folded
into the weights before saving (`fold_scale`), as sae-lens does, so a saved SAE reads raw activations.
Decoder rows are kept at unit norm during training (in the scaled units). TopK's dead latents are revived
by the auxiliary loss of "Scaling and Evaluating Sparse Autoencoders" (AuxK: the k_aux largest dead
pre-activations reconstruct the residual error); ReLU's sparsity comes from an L1 penalty on activations
weighted by their decoder norms.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ..options import OptionError, check_options, option

ARCHITECTURES = ("topk", "standard")


@dataclasses.dataclass(frozen=True)
class SAEConfig:
    """What an SAE is: its widths, its activation, and where it reads (model, layer).

    architecture: "topk" (default) or "standard" (ReLU + L1); k: active latents per token (topk);
    l1_coefficient: the L1 weight (standard); aux_k: dead latents the AuxK loss uses (0: d_in // 2);
    aux_coefficient: the AuxK loss weight (the paper's 1/32); model / layer: what the SAE was trained on
    (layer: the residual stream entering block `layer`, as extraction counts)."""

    d_in: int = option(..., ge=1)
    d_sae: int = option(..., ge=1)
    architecture: Literal["topk", "standard"] = "topk"
    k: int = option(32, ge=1)
    l1_coefficient: float = option(5.0, ge=0.0)
    aux_k: int = option(0, ge=0)
    aux_coefficient: float = option(1 / 32, ge=0.0)
    model: str = ""
    layer: int = -1

    def __post_init__(self):
        check_options(self)
        if self.architecture not in ARCHITECTURES:
            raise OptionError(f"architecture= {self.architecture!r}: choose one of {', '.join(ARCHITECTURES)}")
        if self.architecture == "topk" and self.k > self.d_sae:
            raise OptionError(f"k= {self.k} is more than the {self.d_sae} latents; choose k <= latents")

    @property
    def k_aux(self) -> int:
        return min(self.aux_k or max(self.d_in // 2, 1), self.d_sae)


@struct.dataclass
class SAEParams:
    W_enc: jax.Array  # [d_in, d_sae]
    b_enc: jax.Array  # [d_sae]
    W_dec: jax.Array  # [d_sae, d_in]
    b_dec: jax.Array  # [d_in]


def init_params(cfg: SAEConfig, key: jax.Array, mean: np.ndarray | None = None) -> SAEParams:
    """Unit-norm random decoder rows, the encoder its transpose (a tied start), b_dec at the data mean
    (`mean`, in training units) so the first steps learn directions, not the offset."""
    w = jax.random.normal(key, (cfg.d_sae, cfg.d_in), jnp.float32)
    w = w / jnp.linalg.norm(w, axis=1, keepdims=True)
    b_dec = jnp.zeros(cfg.d_in, jnp.float32) if mean is None else jnp.asarray(mean, jnp.float32)
    return SAEParams(W_enc=w.T, b_enc=jnp.zeros(cfg.d_sae, jnp.float32), W_dec=w, b_dec=b_dec)


def pre_activations(p: SAEParams, x: jax.Array) -> jax.Array:
    """[..., d_in] -> [..., d_sae]."""
    return (x.astype(jnp.float32) - p.b_dec) @ p.W_enc + p.b_enc


def activate(cfg: SAEConfig, pre: jax.Array) -> jax.Array:
    """The latent code from pre-activations [..., d_sae]."""
    if cfg.architecture == "standard":
        return jax.nn.relu(pre)
    return topk_relu(pre, cfg.k)


def topk_relu(pre: jax.Array, k: int) -> jax.Array:
    """ReLU of the k largest entries of the last axis, zeros elsewhere (sae-lens' TopK)."""
    values, idx = jax.lax.top_k(pre, k)
    out = jnp.zeros_like(pre)
    return jnp.put_along_axis(out, idx, jax.nn.relu(values), axis=-1, inplace=False)


def encode(cfg: SAEConfig, p: SAEParams, x: jax.Array) -> jax.Array:
    """[..., d_in] -> latent code [..., d_sae]."""
    return activate(cfg, pre_activations(p, x))


def decode(p: SAEParams, acts: jax.Array) -> jax.Array:
    """[..., d_sae] -> [..., d_in]."""
    return acts @ p.W_dec + p.b_dec


def normalize_decoder(p: SAEParams) -> SAEParams:
    """Decoder rows back to unit norm (after each optimizer step)."""
    return p.replace(W_dec=p.W_dec / jnp.maximum(jnp.linalg.norm(p.W_dec, axis=1, keepdims=True), 1e-8))


def fold_scale(p: SAEParams, scale: float) -> SAEParams:
    """An SAE trained on x * scale, rewritten to read raw x (and to write raw reconstructions)."""
    return SAEParams(W_enc=p.W_enc * scale, b_enc=p.b_enc, W_dec=p.W_dec / scale, b_dec=p.b_dec / scale)


def losses(cfg: SAEConfig, p: SAEParams, x: jax.Array, dead: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Training loss on a batch x [B, d_in] (training units); dead [d_sae] bool marks latents to revive.

    mse: squared error summed over d_in, mean over the batch. standard: + l1 * sum_i |a_i| |W_dec_i|.
    topk: + aux * AuxK, where the k_aux largest pre-activations among dead latents reconstruct x - x_hat,
    weighted by min(dead / k_aux, 1) as sae-lens does (no dead latents, no aux loss)."""
    pre = pre_activations(p, x)
    acts = activate(cfg, pre)
    x_hat = decode(p, acts)
    err = x - x_hat
    mse = jnp.mean(jnp.sum(err ** 2, axis=-1))
    out = {"mse": mse, "l0": jnp.mean(jnp.sum(acts > 0, axis=-1)), "fired": jnp.any(acts > 0, axis=0)}
    total = mse
    if cfg.architecture == "standard":
        l1 = jnp.mean(jnp.sum(acts * jnp.linalg.norm(p.W_dec, axis=1), axis=-1))
        total = total + cfg.l1_coefficient * l1
        out["l1"] = l1
    else:
        n_dead = jnp.sum(dead)

        def aux_loss(_):
            aux_acts = topk_relu(jnp.where(dead, pre, -jnp.inf), cfg.k_aux)  # relu(-inf) = 0: live ones never enter
            e_hat = aux_acts @ p.W_dec
            aux = jnp.mean(jnp.sum((jax.lax.stop_gradient(err) - e_hat) ** 2, axis=-1))
            return aux * jnp.minimum(n_dead / cfg.k_aux, 1.0)

        # only when a latent is dead: a real branch, so a healthy SAE's step does not pay for it
        aux = jax.lax.cond(n_dead > 0, aux_loss, lambda _: jnp.zeros((), jnp.float32), None)
        total = total + cfg.aux_coefficient * aux
        out["aux"] = aux
    out["loss"] = total
    return total, out


def fvu(x: np.ndarray, x_hat: np.ndarray) -> float:
    """Fraction of variance unexplained: sum |x - x_hat|^2 / sum |x - mean(x)|^2 (rows are tokens)."""
    x, x_hat = np.asarray(x, np.float64), np.asarray(x_hat, np.float64)
    return float(((x - x_hat) ** 2).sum() / max(((x - x.mean(0)) ** 2).sum(), 1e-30))

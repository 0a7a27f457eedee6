"""How good an SAE is, on held-out text: the four standard figures.

- FVU: fraction of the layer's token variance its reconstruction leaves unexplained.
- L0: active latents per token.
- dead: latents that never fire on the held-out tokens (and, from training, latents silent for the last
  `dead_after` tokens).
- CE loss recovered: next-token loss with the layer's states replaced by their reconstructions, placed
  between the clean model (1.0) and the layer zero-ablated (0.0): (CE_zero − CE_sae) / (CE_zero − CE_clean).
  Every token after each text's first is replaced (the first is the attention sink the SAE never sees);
  the loss counts every next-token prediction from position 1 on.
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .activations import TokenBatches
from .model import SAEConfig, SAEParams, decode, encode


@partial(jax.jit, static_argnames=("model_cfg", "sae_cfg", "layer", "dtype"))
def _batch_figures(params, sae: SAEParams, ids, mask, keep, *, model_cfg, sae_cfg: SAEConfig, layer: int, dtype):
    """Sums over one batch: squared error, token count, active latents, per-latent fire flags, and the
    next-token CE (summed) with clean / SAE / zero states at the layer."""
    from ..models import decoder

    h = decoder.hidden_states(params, ids, mask, cfg=model_cfg, layers=(layer,), dtype=dtype)[0]  # [B, S, D]
    hf = h.astype(jnp.float32)
    acts = encode(sae_cfg, sae, hf)  # [B, S, d_sae]
    recon = decode(sae, acts)
    k = keep[..., None]
    target = ids[:, 1:]
    counted = (mask[:, 1:] * mask[:, :-1]).astype(jnp.float32)  # a real next token after a real token

    def ce(state):
        logits = decoder.logits_from(params, state.astype(h.dtype), ids, mask, cfg=model_cfg, start=layer,
                                     dtype=dtype)[:, :-1]
        lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        return -(jnp.take_along_axis(lp, target[..., None], axis=-1)[..., 0] * counted).sum()

    err = jnp.where(k, hf - recon, 0.0)
    return {"sq_err": (err ** 2).sum(), "sum_x": jnp.where(k, hf, 0.0).sum((0, 1)),
            "sum_x2": jnp.where(k, hf ** 2, 0.0).sum(), "tokens": keep.sum(),
            "active": jnp.where(k, acts > 0, False).sum(), "fired": jnp.any(jnp.where(k, acts > 0, False), axis=(0, 1)),
            "ce_clean": ce(h), "ce_sae": ce(jnp.where(k, recon, hf)), "ce_zero": ce(jnp.where(k, 0.0, hf)),
            "predictions": counted.sum()}


def sae_quality(model, sae_cfg: SAEConfig, sae: SAEParams, texts: Sequence[str], layer: int, batch_size: int = 4,
                max_length: int = 256) -> dict[str, float]:
    """The figures (module docstring) of a raw-unit SAE at `layer` of `model` over `texts`."""
    tot: dict[str, np.ndarray] = {}
    for ids, mask, keep in TokenBatches(model, texts, batch_size, max_length):
        out = _batch_figures(model.params, sae, ids, mask, keep, model_cfg=model.config, sae_cfg=sae_cfg, layer=layer,
                             dtype=model.dtype)
        for key, val in jax.device_get(out).items():
            tot[key] = val if key not in tot else tot[key] | val if key == "fired" else tot[key] + val
    n = float(tot["tokens"])
    mean = tot["sum_x"] / n
    variance = float(tot["sum_x2"]) - n * float((mean.astype(np.float64) ** 2).sum())
    ce = {k: float(tot[k]) / float(tot["predictions"]) for k in ("ce_clean", "ce_sae", "ce_zero")}
    return {"fvu": float(tot["sq_err"]) / variance, "l0": float(tot["active"]) / n,
            "dead_fraction_heldout": 1.0 - float(np.mean(tot["fired"])), **ce,
            "ce_loss_recovered": (ce["ce_zero"] - ce["ce_sae"]) / (ce["ce_zero"] - ce["ce_clean"]),
            "tokens": int(n)}


def quality_markdown(summaries: Sequence[dict]) -> str:
    """One row per trained SAE (its training.json): the four figures and the training throughput."""
    from ..markdown import table

    rows = [[s["model"], s["layer"], f"{s['d_sae']:,} ({s['d_sae'] // s['d_in']}x)", s["architecture"], s["k"],
             f"{s['fvu']:.3f}", f"{s['l0']:.1f}", f"{s['dead_fraction_heldout']:.1%}",
             f"{s['ce_loss_recovered']:.3f} ({s['ce_clean']:.2f} / {s['ce_sae']:.2f} / {s['ce_zero']:.2f})",
             f"{s['tokens_trained']:,}", f"{s['tokens_per_second']:,.0f}"] for s in summaries]
    return table(["model", "layer", "latents", "kind", "k", "FVU", "L0", "dead", "CE loss recovered (clean / SAE / "
                  "zero)", "tokens", "tokens/s"], rows)

"""What a steering vector is made of, in an SAE's features; and steering with one feature.

`vector_features`: the latents whose decoder directions a vector loads on most (cosine between the vector
and each decoder row; positive: adding the vector adds the feature). `top_activations`: for chosen latents,
the corpus tokens where each fires hardest, with the text around them, from one pass over the corpus.
`latent_vector`: one latent's decoder direction as a `SteeringVector` at the SAE's layer, so every steering
tool (steer generate, calibrate, export, serve) steers with a feature.
"""

from __future__ import annotations

import heapq
from functools import partial
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import UserError
from .model import SAEConfig, SAEParams, encode


class FeatureInputError(UserError, ValueError):
    """A vector or latent the SAE cannot be read against (width, layer, index)."""


def vector_features(cfg: SAEConfig, sae: SAEParams, v: np.ndarray, top: int = 10) -> list[dict[str, Any]]:
    """The `top` latents by |cosine(v, decoder row)|: [{"latent", "cosine"}], largest first."""
    v = np.asarray(v, np.float64).reshape(-1)
    if v.shape[0] != cfg.d_in:
        raise FeatureInputError(f"the vector is {v.shape[0]}-wide; this SAE reads {cfg.d_in}-wide states")
    if not np.isfinite(v).all() or not np.linalg.norm(v):
        raise FeatureInputError("the vector is zero or not finite: it loads on no feature")
    dec = np.asarray(sae.W_dec, np.float64)
    cos = dec @ v / (np.linalg.norm(dec, axis=1) * np.linalg.norm(v) + 1e-30)
    order = np.argsort(-np.abs(cos))[:top]
    return [{"latent": int(i), "cosine": float(cos[i])} for i in order]


@partial(jax.jit, static_argnames=("model_cfg", "sae_cfg", "layer", "dtype"))
def _codes(params, sae: SAEParams, latents, ids, mask, *, model_cfg, sae_cfg, layer, dtype):
    """[B, S, len(latents)] activations of the chosen latents at every token."""
    from ..models import decoder

    h = decoder.hidden_states(params, ids, mask, cfg=model_cfg, layers=(layer,), dtype=dtype)[0]
    return encode(sae_cfg, sae, h.astype(jnp.float32))[..., latents]


def top_activations(model, cfg: SAEConfig, sae: SAEParams, texts: Sequence[str], latents: Sequence[int],
                    layer: int, n: int = 5, batch_size: int = 16, max_length: int = 256,
                    context: int = 12) -> dict[int, list[dict[str, Any]]]:
    """For each latent, its n strongest tokens over the texts (each text's first token left out, as in
    training): {"activation", "token", "before", "after"} (the text around the token)."""
    from .activations import TokenBatches

    bad = [i for i in latents if not 0 <= int(i) < cfg.d_sae]
    if bad:
        raise FeatureInputError(f"latent(s) {bad} outside this SAE's 0 .. {cfg.d_sae - 1}")
    heaps: dict[int, list] = {int(i): [] for i in latents}  # min-heaps of (activation, tie, pos, token ids)
    lat = jnp.asarray(np.asarray(latents, np.int32))
    tie = 0
    for ids, mask, keep in TokenBatches(model, texts, batch_size, max_length):
        acts = np.asarray(_codes(model.params, sae, lat, ids, mask, model_cfg=model.config, sae_cfg=cfg, layer=layer,
                                 dtype=model.dtype))
        acts = np.where(keep[..., None], acts, 0.0)
        for j, heap in enumerate(heaps.values()):
            a = acts[..., j]
            for flat in np.argsort(-a, axis=None)[:n]:
                row, pos = np.unravel_index(flat, a.shape)
                if a[row, pos] <= 0 or (len(heap) == n and a[row, pos] <= heap[0][0]):
                    break
                tie += 1
                item = (float(a[row, pos]), tie, int(pos), ids[row])
                (heapq.heappush if len(heap) < n else heapq.heapreplace)(heap, item)
    tok = model.tokenizer
    return {latent: [{"activation": act, "token": tok.decode([int(row_ids[pos])]),
                      "before": tok.decode([int(t) for t in row_ids[max(pos - context, 0):pos]]),
                      "after": tok.decode([int(t) for t in row_ids[pos + 1:pos + 1 + context // 2]])}
                     for act, _, pos, row_ids in sorted(heap, reverse=True)]
            for latent, heap in heaps.items()}


def latent_vector(cfg: SAEConfig, sae: SAEParams, latent: int, model_type: str = ""):
    """Latent `latent`'s decoder direction (unit length) at the SAE's layer, as a SteeringVector."""
    from ..core.vector import SteeringVector

    if not 0 <= latent < cfg.d_sae:
        raise FeatureInputError(f"latent {latent} is outside this SAE's 0 .. {cfg.d_sae - 1}")
    if cfg.layer < 0:
        raise FeatureInputError("this SAE's files do not say which layer it reads; give the layer")
    d = np.asarray(sae.W_dec[latent], np.float32)
    return SteeringVector({cfg.layer: d / np.linalg.norm(d)}, model=cfg.model or "unknown", model_type=model_type,
                          trait=f"sae_latent_{latent}", method="sae_latent",
                          provenance={"sae_latent": str(latent), "sae_d_sae": str(cfg.d_sae)})


def features_markdown(vector, sae, layer: int, loads: list[dict]) -> str:
    """The feature view as a Markdown table (the CLI prints it; the report shows it)."""
    from ..markdown import table

    def where(f: dict) -> str:
        return " · ".join(f"…{t['before'][-40:]}[{t['token']}]{t['after'][:20]}… ({t['activation']:.1f})"
                          for t in f.get("top_activations", [])[:3]).replace("\n", " ") or "(never fires on the corpus)"

    return (f"# SAE features of {vector} (layer {layer}, SAE {sae})\n\n"
            + table(["latent", "cosine", "where it fires hardest (token in [brackets], activation)"],
                    [[f["latent"], f"{f['cosine']:+.3f}", where(f)] for f in loads]) + "\n")

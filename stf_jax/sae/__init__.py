"""Sparse autoencoders on one layer of a model: train (JAX + optax), measure, read and write sae-lens' files,
and look at steering vectors through their features.

    summary = stf_jax.sae.train_sae(model, 15, stf_jax.sae.corpus_texts("shipped"), "runs/sae/s15")
    cfg, params, meta = stf_jax.sae.load_sae("runs/sae/s15/sae")          # stf_jax or sae-lens directories
    stf_jax.sae.sae_quality(model, cfg, params, texts, layer=15)         # FVU, L0, dead, CE loss recovered
    stf_jax.sae.vector_features(cfg, params, v)                          # the latents a vector loads on
    stf_jax.sae.latent_vector(cfg, params, 4003).save("please.gguf")     # steer with one feature

The CLI is `python -m stf_jax.sae` (train, eval, features, latent). s2l maps through an SAE are a method of
the one map interface (`stf_jax.align.maps`, `python -m stf_jax.transfer fit --method s2l --sae DIR`). Names
load lazily, so importing this package does not import JAX.
"""

from __future__ import annotations

_LAZY = {
    "SAEConfig": "model", "SAEParams": "model", "encode": "model", "decode": "model",
    "TrainOptions": "train", "train_sae": "train", "fit_sae": "train",
    "corpus_texts": "activations", "sae_quality": "quality",
    "load_sae": "saelens", "save_sae": "saelens", "SAEFileError": "saelens",
    "vector_features": "features", "top_activations": "features", "latent_vector": "features",
}
__all__ = list(_LAZY)


def __getattr__(name: str):
    from .. import _lazy_attribute

    return _lazy_attribute(__name__, _LAZY, name)

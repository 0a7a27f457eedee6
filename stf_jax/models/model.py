"""`Model`: a loaded decoder (config + parameter pytree + tokenizer) with a small, stable API."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..core.layers import LayerSpec
from . import decoder
from .config import DecoderConfig


@dataclasses.dataclass
class Model:
    config: DecoderConfig
    params: Any  # pytree of jax arrays, layers stacked along axis 0
    tokenizer: Any  # transformers.PreTrainedTokenizerFast
    dtype: jnp.dtype
    name: str
    path: str = ""

    def resolve_layers(self, layers: LayerSpec) -> tuple[int, ...]:
        """HF hidden-state indices for a layer spec, in the order asked (`DecoderConfig.resolve_layers`)."""
        return self.config.resolve_layers(layers)

    def encode(self, texts: Sequence[str], padding_side: str = "right", max_length: int | None = None,
               add_special_tokens: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Tokenize a batch -> (input_ids [B, S] int32, attention_mask [B, S] int32)."""
        tok = self.tokenizer
        tok.padding_side = padding_side
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        enc = tok(list(texts), padding=True, truncation=max_length is not None, max_length=max_length,
                  add_special_tokens=add_special_tokens, return_tensors="np")
        return enc["input_ids"].astype(np.int32), enc["attention_mask"].astype(np.int32)

    def hidden_states(self, input_ids, attention_mask, layers: Sequence[int] | int | str,
                      intervention: decoder.Intervention | None = None) -> jax.Array:
        """[len(layers), B, S, D] in the HF convention; the forward stops at the deepest layer. attention_mask:
        0/1, or segment ids to pack several texts in a row (k >= 1 for the row's k-th text; each attends only
        to itself, positions from 0)."""
        return decoder.hidden_states(
            self.params, jnp.asarray(input_ids, jnp.int32), jnp.asarray(attention_mask, jnp.int32), intervention,
            cfg=self.config, layers=self.resolve_layers(layers), dtype=self.dtype,
        )

    def logits(self, input_ids, attention_mask, intervention: decoder.Intervention | None = None,
               layers: Sequence[int] | int | str = ()) -> tuple[jax.Array, jax.Array | None]:
        """(logits [B, S, V] f32, hidden states for `layers` or None)."""
        layers = self.resolve_layers(layers) if layers != () else ()
        return decoder.logits_and_hidden_states(
            self.params, jnp.asarray(input_ids, jnp.int32), jnp.asarray(attention_mask, jnp.int32), intervention,
            cfg=self.config, layers=layers, dtype=self.dtype,
        )

"""stf_jax: extract, align and transfer steering vectors between language models in JAX/Flax.

Public API: `load_model(name_or_path, dtype="float32")` -> Model with `.config`, `.tokenizer`
and `.hidden_states(input_ids, attention_mask, layers)`.
"""

from .models.loading import load_model
from .models.model import Model
from .models.config import DecoderConfig
from .models.decoder import Intervention

__all__ = ["load_model", "Model", "DecoderConfig", "Intervention"]
__version__ = "0.1.0"

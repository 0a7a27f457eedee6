"""Extraction: contrast pairs or corpora -> hidden states and steering vectors in a run directory."""

from .layers import parse_layer_spec, resolve_layers
from .run import ExtractOptions, ModelSummary, extract_corpus, extract_pairs
from .store import load_layer, read_manifest

__all__ = ["ExtractOptions", "ModelSummary", "extract_corpus", "extract_pairs", "load_layer", "parse_layer_spec",
           "read_manifest", "resolve_layers"]

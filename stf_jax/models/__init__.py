"""Decoder models: config mapping, the Flax decoder, parameter assembly, loaders, registry."""

"""mmsae: sparse autoencoders for large multimodal models."""

__version__ = "0.1.0"

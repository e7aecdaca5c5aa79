"""mmsae: sparse autoencoders for large multimodal models."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `from mmsae import SAE` without making `import mmsae` pay for torch
    if name == "SAE":
        from mmsae.sae import SAE

        return SAE
    raise AttributeError(f"module 'mmsae' has no attribute {name!r}")

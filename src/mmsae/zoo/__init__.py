"""The zoo: three models trained on the embedded world, shipped in standard Hugging Face format.

- subject: a small LLaVA (CLIP tower + Llama decoder) whose features the SAEs study;
- explainer: a larger LLaVA that names the concept shared by the visible patches of masked images;
- clip: a CLIP dual encoder for the CLIP score.

May import (the layers of pyproject.toml's importlinter contract): steer, attribute, saev, finetune and every
layer below them; never pipeline, view or cli.
"""

from __future__ import annotations

from mmsae.defaults import ZOO_MODELS as MODELS
from mmsae.defaults import ZOO_WEIGHTS as WEIGHTS
from mmsae.defaults import zoo_model_dir as model_dir

__all__ = ["MODELS", "WEIGHTS", "model_dir"]

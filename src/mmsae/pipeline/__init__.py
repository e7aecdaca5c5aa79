"""Composed jobs: one layer end to end (harvest -> train -> index -> explain -> score, `layer.py`), the demo's
stages and report (`demo.py`, `stages.py`, `interp.py`, `saev_stage.py`, `finetune_stage.py`, `report.py`) and
the oracle explainer (`oracle.py`).

The pipeline sits above every tool package (zoo, steer, attribute, saev, finetune, explain, score, llm, index,
train, evals, store, ...) and may import any of them; only the viewer and the CLI sit above it. It never imports
a CLI module: it calls the packages' Python APIs (a subprocess may run an `mmsae` command). Modules here import
torch and the tool packages lazily, inside functions, so that configs stay light.

May import (the layers of pyproject.toml's importlinter contract): zoo and every layer below it (steer,
attribute, saev, finetune, explain, score, llm, index, train, evals, sae, store, models, data, world, viz, io,
util, defaults); never view or cli.
"""

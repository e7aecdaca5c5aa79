"""`mmsae view`: a local web viewer over a feature index (feature list, feature pages with image heatmaps and
text contexts, an image page that runs the model and SAE, a steering playground with attribution), and the
Neuronpedia export.

    from mmsae.view.app import ViewConfig, run_view
    from mmsae.view.neuronpedia import ExportConfig, run_export

Nothing is imported here: the server stack loads only when the viewer runs.

May import (the layers of pyproject.toml's importlinter contract): pipeline and every layer below it: zoo, the
tools on a trained SAE, explain, score, llm, index, train, evals, sae, store, models, data, world, viz, io,
util, defaults.
"""

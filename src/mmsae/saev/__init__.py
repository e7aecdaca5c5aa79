"""SAE-V: cross-modal feature weights, SAE-based data and patch filtering, SAE vs SAE-V.

    from mmsae.saev.scoring import score_records       # id -> score (l0 | cooccur | cosine | clip | random)
    from mmsae.saev.crossmodal import CrossmodalConfig, run_crossmodal
    from mmsae.saev.filter import FilterScoreConfig, run_filter_score, FilterSelectConfig, run_filter_select
    from mmsae.saev.patches import patch_scores, mask_image

Submodules are imported on use so that the configs stay light to import.

May import (the layers of pyproject.toml's importlinter contract): explain, score, llm, index, train, evals,
sae, store, models, data, world, viz, io, util, defaults; not its siblings steer, attribute, finetune.
"""

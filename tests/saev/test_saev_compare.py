import json

import pytest

from mmsae.data import open_source
from mmsae.saev.compare import compare, text_only_jsonl, train_sae


@pytest.mark.slow
def test_text_and_image_text_saes_compared_on_both_data(tmp_path, subject):
    from mmsae.store import HarvestConfig, harvest
    from mmsae.defaults import default_model

    path = text_only_jsonl(tmp_path / "t.jsonl", 24, seed=1)
    row = json.loads(path.read_text().splitlines()[0])
    assert "image" not in row and "<image>" not in row["conversations"][0]["value"]
    assert open_source(str(path)).record(0).images == []
    stores = {}
    for name, data, prompt in (("image_text", "world:n=12,seed=1", "<s> user : <image> {caption}"),
                               ("text", str(path), None)):
        harvest(HarvestConfig(out=str(tmp_path / name), model=default_model(), layer=3, data=data, prompt=prompt,
                              progress=False, dtype="float32"))
        stores[name] = tmp_path / name
    saes = {"sae_text": train_sae(stores["text"], tmp_path / "a", "topk", 20, 3, batch=64),
            "saev": train_sae(stores["image_text"], tmp_path / "b", "topk", 20, 3, batch=64)}
    sources = {"image_text": open_source("world:n=12,seed=1", prompt="<s> user : <image> {caption}"),
               "text": open_source(str(path))}
    m = compare(saes, stores, subject, sources, 3, splice_records=4)
    for model in saes:
        for key in ("fvu_image", "fvu_text", "fvu_textonly", "l0_image", "dead_textonly", "ce_recovered_textonly",
                    "kl_image"):
            assert isinstance(m[f"{model}.{key}"], float), (model, key)

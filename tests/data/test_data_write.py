import json

import numpy as np
import pytest
from PIL import Image

from mmsae.data import open_source
from mmsae.data.write import read_column, write_dataset


def _images(root, n):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((8, 8, 3), i * 20, np.uint8)).save(root / f"im{i}.png")


def test_jsonl_keeps_every_field_and_adds_the_column(tmp_path):
    _images(tmp_path / "imgs", 3)
    rows = [{"id": f"r{i}", "image": f"im{i}.png", "conversations": [{"from": "human", "value": f"<image> c{i}"}],
             "extra": {"k": i}} for i in range(3)]
    (tmp_path / "imgs" / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    src = open_source(str(tmp_path / "imgs" / "d.jsonl"))
    out = write_dataset(src, tmp_path / "out", {"saev_l0": [1.0, None, 3.0, None]}, rows=[2, 0, 3])
    lines = out.path.read_bytes().splitlines()
    assert json.loads(lines[0]) == {**rows[2], "saev_l0": 3.0}
    assert json.loads(lines[1]) == {**rows[0], "saev_l0": 1.0}
    assert lines[2] == b"not json"  # kept as it was; its record is a reject
    back = open_source(out.spec)
    assert back.record(0).id == "r2" and back.record(0).images[0].size == (8, 8)  # image paths still resolve
    assert read_column(back, "saev_l0")[:2] == [3.0, 1.0]


def test_parquet_and_hf_round_trip(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["a", "b"], "text": ["x", "y"], "n": [1, 2]}), tmp_path / "d.parquet")
    src = open_source(str(tmp_path / "d.parquet"))
    out = write_dataset(src, tmp_path / "p", {"saev_cooccur": [5.0, 7.0]}, rows=[1])
    assert pq.read_table(out.path).to_pylist() == [{"id": "b", "text": "y", "n": 2, "saev_cooccur": 7.0}]
    datasets.Dataset.from_dict({"id": ["a", "b"], "caption": ["x", "y"]}).save_to_disk(str(tmp_path / "hf"))
    src = open_source(str(tmp_path / "hf"))
    out = write_dataset(src, tmp_path / "h", {"saev_l0": [1.5, 2.5]})
    assert datasets.load_from_disk(str(out.path)).to_list() == [{"id": "a", "caption": "x", "saev_l0": 1.5},
                                                                  {"id": "b", "caption": "y", "saev_l0": 2.5}]
    assert read_column(open_source(out.spec), "saev_l0") == [1.5, 2.5]
    out2 = write_dataset(src, tmp_path / "h2", {"saev_l0": [1.0, 2.0]}, fmt="jsonl")
    assert [json.loads(x)["saev_l0"] for x in out2.path.read_text().splitlines()] == [1.0, 2.0]


def test_folder_and_world_become_image_folders(tmp_path):
    _images(tmp_path / "f" / "sub", 2)
    src = open_source(str(tmp_path / "f"))
    out = write_dataset(src, tmp_path / "o", {"saev_l0": [1.0, 2.0]}, rows=[1])
    back = open_source(out.spec)
    assert len(back) == 1 and back.record(0).id == "sub/im1.png" and read_column(back, "saev_l0") == [2.0]
    w = write_dataset(open_source("world:n=2,seed=0"), tmp_path / "w", {"s": [0.1, 0.2]})
    assert read_column(open_source(w.spec), "s") == [0.1, 0.2]
    with pytest.raises(ValueError, match="as a folder only"):
        write_dataset(src, tmp_path / "x", {}, fmt="parquet")
    with pytest.raises(ValueError, match="has 1 values for 2 records"):
        write_dataset(src, tmp_path / "x", {"s": [1]})

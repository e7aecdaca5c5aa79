"""Data sources: stable ids, prompt templates, and every kind of bad input becoming a Reject."""

import json

import numpy as np
import pytest
from PIL import Image

from mmsae.data import (
    HFDiskSource,
    ImageFolderSource,
    JsonlSource,
    ParquetSource,
    Reject,
    WorldSource,
    load_image,
    open_source,
)


def _png(path, arr):
    Image.fromarray(arr).save(path)
    return path


def test_modes_are_converted_to_rgb(tmp_path):
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[:, :15] = (200, 30, 10)
    assert load_image(Image.fromarray(rgb).convert("CMYK"), "x").mode == "RGB"
    rgba = np.dstack([rgb, np.where(np.arange(30) < 15, 255, 0)[None].repeat(20, 0).astype(np.uint8)])
    out = np.asarray(load_image(Image.fromarray(rgba, "RGBA"), "x"))
    assert tuple(out[0, 0]) == (200, 30, 10) and tuple(out[0, 29]) == (255, 255, 255)  # alpha -> white
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE)
    assert np.abs(np.asarray(load_image(pal, "x")).astype(int) - rgb).max() <= 2
    ramp16 = (np.arange(20 * 30).reshape(20, 30) * 100).astype(np.uint16)
    out16 = np.asarray(load_image(_png(tmp_path / "d.png", ramp16), "x"))
    assert out16.shape == (20, 30, 3) and 0 < out16.mean() < 255 and out16[0, 0, 0] == 0  # not clipped white
    f = Image.fromarray(np.linspace(-1, 1, 600, dtype=np.float32).reshape(20, 30), "F")
    outf = np.asarray(load_image(f, "x"))
    assert outf[0, 0, 0] == 0 and outf[-1, -1, 0] == 255
    gray = np.asarray(load_image(Image.fromarray(rgb[..., 0]), "x"))
    assert gray.shape == (20, 30, 3)


@pytest.mark.parametrize("make,reason", [
    (lambda p: p, "missing file"),
    (lambda p: (p.write_bytes(b""), p)[1], "zero-byte"),
    (lambda p: (p.write_bytes(b"\x89PNG garbage"), p)[1], "not a readable image"),
    (lambda p: (p.write_bytes(_trunc()), p)[1], "truncated"),
    (lambda p: (Image.new("RGB", (400, 300)).save(p, format="PNG"), p)[1], "huge"),
    (lambda p: (Image.new("RGB", (1, 50)).save(p, format="PNG"), p)[1], "too small"),
])
def test_bad_files_are_rejected_with_reason(tmp_path, make, reason):
    path = make(tmp_path / "img.png")
    with pytest.raises(Reject, match=reason) as err:
        load_image(path, "sid", max_pixels=100_000)
    assert err.value.id == "sid"


def _trunc():
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(buf, "JPEG")
    return buf.getvalue()[: len(buf.getvalue()) * 7 // 10]


def test_folder_ids_are_sorted_relative_paths(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.png", "a.jpg", "sub/c.png"):
        Image.new("RGB", (8, 8), "red").save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    src = ImageFolderSource(tmp_path, prompt="<image> what colour")
    assert src.files == ["a.jpg", "b.png", "sub/c.png"] and len(src) == 3
    rec = src.record(2)
    assert rec.id == "sub/c.png" and rec.text == "<image> what colour" and rec.images[0].size == (8, 8)


def test_jsonl_llava_conversations_and_malformed_lines(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    lines = [
        json.dumps({"id": "s1", "image": "x.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A square."}]}),
        "{not json",
        "",
        json.dumps({"id": "s3", "image": "missing.png", "conversations": []}),
        json.dumps({"conversations": [{"from": "human", "value": "text only"}]}),
        json.dumps({"id": "s5", "conversations": "oops"}),
        json.dumps([1, 2]),
    ]
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    src = JsonlSource(tmp_path / "d.jsonl")
    assert len(src) == 6  # blank lines are not records
    r = src.record(0)
    assert r.id == "s1" and r.text == "<image>\nWhat is it?\nA square." and len(r.images) == 1
    with pytest.raises(Reject, match="malformed JSON") as e:
        src.record(1)
    assert e.value.id == "d.jsonl:1"
    with pytest.raises(Reject, match="missing file"):
        src.record(2)
    assert src.record(3).id == "d.jsonl:3" and src.record(3).images == []
    with pytest.raises(Reject, match="conversations"):
        src.record(4)
    with pytest.raises(Reject, match="not an object"):
        src.record(5)
    wrapped = JsonlSource(tmp_path / "d.jsonl", prompt="USER: {text} END")
    assert wrapped.record(0).text.startswith("USER: <image>")


def test_hf_disk_and_parquet_sources(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    imgs = [Image.new("RGB", (10, 12), c) for c in ("red", "blue", "green")]
    ds = datasets.Dataset.from_dict({"image": imgs, "caption": ["r", "b", "g"], "id": ["i0", "i1", "i2"]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "caption": datasets.Value("string"),
                                                                "id": datasets.Value("string")}))
    datasets.DatasetDict({"train": ds}).save_to_disk(tmp_path / "hf")
    src = HFDiskSource(tmp_path / "hf", prompt="<image> {text}")
    rec = src.record(1)
    assert len(src) == 3 and rec.id == "i1" and rec.text == "<image> b"
    assert rec.images[0].getpixel((0, 0)) == (0, 0, 255)
    assert isinstance(open_source(str(tmp_path / "hf")), HFDiskSource)

    import io

    def png(c):
        b = io.BytesIO()
        Image.new("RGB", (6, 6), c).save(b, "PNG")
        return b.getvalue()

    table = pa.table({"image": [{"bytes": png("red"), "path": None}, {"bytes": b"broken", "path": None},
                                {"bytes": png("blue"), "path": None}], "text": ["a", "b", "c"]})
    (tmp_path / "pq").mkdir()
    pq.write_table(table, tmp_path / "pq" / "part0.parquet", row_group_size=2)
    src = open_source(str(tmp_path / "pq"), prompt="<image>")
    assert isinstance(src, ParquetSource) and len(src) == 3
    assert src.record(2).id == "2" and src.record(2).images[0].getpixel((0, 0)) == (0, 0, 255)
    with pytest.raises(Reject, match="not a readable image"):
        src.record(1)
    assert src.record(0).images[0].getpixel((0, 0)) == (255, 0, 0)


def test_world_source_and_specs(tmp_path):
    src = open_source("world:n=5,seed=2")
    assert isinstance(src, WorldSource) and len(src) == 5
    r = src.record(3)
    assert r.id == "world-2-3" and r.text == "<image>" and r.images[0].size == (64, 64)
    captioned = open_source("world:n=5,seed=2", prompt="<image> {caption}").record(3)
    from mmsae.world.text import caption

    assert captioned.text == "<image> " + caption(src.world[3]) and len(captioned.text) > 10
    again = open_source("world:n=5,seed=2").record(3)
    assert np.array_equal(np.asarray(r.images[0]), np.asarray(again.images[0]))
    for bad in ("world:seed=1", "world:n=3,colour=red"):
        with pytest.raises(ValueError):
            open_source(bad)
    with pytest.raises(FileNotFoundError):
        open_source(str(tmp_path / "absent"))
    (tmp_path / "d.jsonl").write_text("")
    assert isinstance(open_source(f"jsonl:{tmp_path / 'd.jsonl'}?image_root={tmp_path}"), JsonlSource)

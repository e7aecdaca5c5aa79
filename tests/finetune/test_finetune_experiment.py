"""The experiment's parts: corrupted set with labels apart, AUROC, top-share selection, IFD on the subject."""

import json

import numpy as np
from transformers import AutoModelForImageTextToText, AutoProcessor

from mmsae.data import open_source
from mmsae.defaults import zoo_model_dir
from mmsae.finetune.corrupt import CORRUPTIONS, read_labels, write_instruction_set
from mmsae.finetune.experiment import auroc, summarise, top_ids
from mmsae.finetune.ifd import ifd_scores, selection_scores


def test_corrupted_set_keeps_its_labels_apart(tmp_path):
    res = write_instruction_set(tmp_path / "d", 35, fraction=0.4, seed=3)
    labels = read_labels(tmp_path / "d")
    kinds = [v["corruption"] for v in labels.values()]
    assert res["corrupted"] == 14 == sum(k is not None for k in kinds)
    assert set(k for k in kinds if k) == set(CORRUPTIONS)
    text = (tmp_path / "d" / "instruct.jsonl").read_text()
    assert "corruption" not in text and all(k not in text for k in CORRUPTIONS)
    empties = [json.loads(ln) for ln in text.splitlines() if labels[json.loads(ln)["id"]]["corruption"] == "empty"]
    assert all(e["conversations"][1]["value"] == "" for e in empties)


def test_auroc_and_selection():
    labels = {"a": {"corruption": None}, "b": {"corruption": None}, "c": {"corruption": "noise"},
              "d": {"corruption": "empty"}}
    oracle = {"a": 2.0, "b": 1.0, "c": 0.0, "d": -1.0}
    assert auroc(oracle, labels)["all"] == 1.0 and auroc(oracle, labels)["noise"] == 1.0
    assert auroc({k: -v for k, v in oracle.items()}, labels)["all"] == 0.0
    assert auroc({"a": 1.0}, labels)["all"] == 0.75  # unscored records rank last, tied among themselves
    assert top_ids(oracle, list(oracle), 0.5) == ["a", "b"]
    rows = [{"selection": "x", "keep": 0.5, "budget": "steps", "accuracy": a} for a in (0.2, 0.4)]
    mean, sd, n = summarise(rows)[("x", 0.5, "steps")]
    assert np.isclose(mean, 0.3) and np.isclose(sd, np.std([0.2, 0.4], ddof=1)) and n == 2


def test_ifd_on_the_trained_subject_flags_wrong_answers(tmp_path):
    write_instruction_set(tmp_path / "d", 42, fraction=0.5, seed=1, kinds=("wrong_value",))
    labels = read_labels(tmp_path / "d")
    src = open_source(f"jsonl:{tmp_path / 'd' / 'instruct.jsonl'}")
    path = zoo_model_dir("subject")
    ifd, rejects = ifd_scores(AutoModelForImageTextToText.from_pretrained(path), AutoProcessor.from_pretrained(path),
                              [src.record(i) for i in range(len(src))])
    assert not rejects and len(ifd) == 42
    clean = [v for k, v in ifd.items() if labels[k]["corruption"] is None]
    wrong = [v for k, v in ifd.items() if labels[k]["corruption"] == "wrong_value"]
    assert np.median(wrong) > np.median(clean)  # the image and question make a wrong answer less likely
    sel = selection_scores(ifd)
    assert all(sel[k] < 0 for k, v in ifd.items() if v >= 1)

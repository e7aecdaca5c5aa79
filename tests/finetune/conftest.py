import json

import pytest

from mmsae.finetune.corrupt import write_instruction_set


@pytest.fixture(scope="session")
def instruct(tmp_path_factory):
    """12 clean world records plus two bad ones (no assistant turn; two placeholders for one image)."""
    root = tmp_path_factory.mktemp("instruct") / "set"
    write_instruction_set(root, 12, fraction=0.0, seed=0)
    with open(root / "instruct.jsonl", "a") as f:
        f.write(json.dumps({"id": "no-answer", "image": "images/0.png",
                            "conversations": [{"from": "human", "value": "<image>\nwhat is the background ?"}]}) + "\n")
        f.write(json.dumps({"id": "two-placeholders", "image": "images/1.png", "conversations": [
            {"from": "human", "value": "<image> <image>\nwhat is the background ?"}, {"from": "gpt", "value": "sky"}]}) + "\n")
    return root

"""Prompt templates and `explain()`: what the backend is asked, and how its completions become explanations."""

import pytest
from PIL import Image

from mmsae.explain import PromptTemplate, explain
from mmsae.llm import Completion, from_data_url


class Scripted:
    name = "scripted"

    def __init__(self, *completions):
        self.completions, self.asked = list(completions), []

    def complete_many(self, batch):
        self.asked.extend(batch)
        return self.completions[: len(batch)]


def test_template_messages_carry_the_images_then_the_instruction():
    template = PromptTemplate.load("paper-v1")
    images = [Image.new("RGB", (4, 4), (i * 60, 0, 0)) for i in range(3)]
    msgs = template.messages(images)
    parts = msgs[-1]["content"]
    assert [p["type"] for p in parts] == ["image_url"] * 3 + ["text"] and parts[-1]["text"] == template.user
    assert [from_data_url(p["image_url"]["url"]).getpixel((0, 0)) for p in parts[:3]] == [(0, 0, 0), (60, 0, 0), (120, 0, 0)]


def test_completions_become_explained_uninterpretable_or_failed():
    backend = Scripted(Completion("Red."), Completion("Unable to interpret"), Completion(None, "HTTP 503: busy"))
    ims = [[Image.new("RGB", (4, 4))]] * 3
    out = explain([3, 4, 5], ims, backend, PromptTemplate.load("zoo-v1"))
    assert [e.status for e in out] == ["explained", "uninterpretable", "failed"]
    assert out[0].explanation == "red" and out[2].explanation is None and out[2].reason == "HTTP 503: busy"
    assert all(e.model == "scripted" and e.prompt_version == "zoo-v1" for e in out) and len(backend.asked) == 3
    with pytest.raises(ValueError, match="3 features but 2 image sets"):
        explain([1, 2, 3], ims[:2], backend, PromptTemplate.load("zoo-v1"))


def test_unknown_template():
    with pytest.raises(ValueError, match="unknown prompt template 'v9'"):
        PromptTemplate.load("v9")

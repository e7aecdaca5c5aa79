"""Fake chat backends for the score tests: judges that read the images they are sent."""

import re

import numpy as np
from PIL import Image

from mmsae.llm import Completion, from_data_url


def image_bytes(image: Image.Image) -> bytes:
    return np.asarray(image.convert("RGB")).tobytes()


def message_image_and_text(messages: list[dict]) -> tuple[Image.Image, str]:
    parts = messages[-1]["content"]
    url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
    text = next(p["text"] for p in parts if p["type"] == "text")
    return from_data_url(url), text


class OracleWorldJudge:
    """A judge that answers the zoo's closed questions from the world's ground truth (a perfect subject).
    Images are recognised by their pixels among the given scenes."""

    name = "oracle"

    def __init__(self, scenes):
        self.scene_of = {image_bytes(s.pil): s for s in scenes}
        self.asked = 0

    def answer(self, scene, question: str) -> str:
        objs = scene.objects
        if m := re.fullmatch(r"is there a (\S+) (\S+) \?", question):
            return "yes" if any(o.colour == m[1] and o.kind == m[2] for o in objs) else "no"
        if m := re.fullmatch(r"is there a (\S+) \?", question):
            return "yes" if m[1] in scene.concepts() else "no"
        if question == "what is the background ?":
            return scene.background
        for pattern, attr in ((r"what texture does the (\S+) have \?", "texture"), (r"what is the (\S+) made of \?", "material"),
                              (r"how big is the (\S+) \?", "size"), (r"where is the (\S+) \?", "position")):
            if m := re.fullmatch(pattern, question):
                return next((getattr(o, attr) for o in objs if o.kind == m[1]), "no")
        raise AssertionError(f"unexpected question {question!r}")

    def complete_many(self, batch):
        out = []
        for messages in batch:
            self.asked += 1
            image, question = message_image_and_text(messages)
            out.append(Completion(self.answer(self.scene_of[image_bytes(image)], question)))
        return out

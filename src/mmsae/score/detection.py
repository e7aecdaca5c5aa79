"""Detection score (after EleutherAI delphi): given a feature's explanation, a judge predicts which of a mix
of activating images (the feature's top images) and non-activating images (the feature is ~0 on them)
activate the feature; the score is the balanced accuracy of those predictions.

Backend-agnostic: the judge is any `complete_many` chat backend (mmsae.llm HTTPChat /
LocalChat, or score.local_judge.BatchedLocalJudge) driven by a versioned template from score/prompts/:
- mode "yes_no": one question per image naming the explanation ('does this image contain ... ?');
- mode "inventory": for judges that only answer closed questions (the zoo subject), the template's
  questions list each whole image's concepts, and an image is predicted active when every concept the
  explanation names is among them. The inventory does not depend on the explanation, so it is asked once
  per image and shared by all features.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Hashable
from dataclasses import asdict, dataclass, field

from PIL import Image

from ..llm import image_part
from ..world.vocab import CONCEPT_CLASSES
from .iou import entity_concepts
from .stats import balanced_accuracy
from .templates import load_template

MODES = ("yes_no", "inventory")


@dataclass(frozen=True)
class DetectionResult:
    bacc: float | None  # None when no image got a verdict
    tp: int
    fn: int
    tn: int
    fp: int
    n_failed: int  # images the judge gave no usable answer for (left out of the accuracy)
    errors: list[str] = field(default_factory=list)
    no_concepts: bool = False  # inventory mode: the explanation names no concept the judge can check

    def to_dict(self) -> dict:
        return asdict(self)


def yes_no(text: str | None) -> bool | None:
    """'Yes.' -> True, 'no' -> False, anything else -> None."""
    words = re.findall(r"[a-z]+", (text or "").lower())
    return {"yes": True, "no": False}.get(words[0]) if words else None


def _shrink(image: Image.Image, max_side: int | None) -> Image.Image:
    if max_side and max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side))
    return image


class DetectionJudge:
    """A chat backend plus a detection template. `predict(explanation, images, keys)` returns one verdict
    per image (True / False / None for a failed answer) and the errors met."""

    def __init__(self, backend, template: str = "detect-yesno-v1", max_side: int | None = 1024):
        self.backend = backend
        self.template = load_template(template, MODES)
        self.version = self.template["version"]
        self.name = f"{getattr(backend, 'name', type(backend).__name__)}/{self.version}"
        self.max_side = max_side
        self.vocabulary = {k: tuple(v) for k, v in (self.template.get("vocabulary") or CONCEPT_CLASSES).items()}
        self._inventories: dict[Hashable, tuple[set[str] | None, str | None]] = {}  # key -> (inventory, error)

    def _messages(self, image: Image.Image, text: str) -> list[dict]:
        system = self.template.get("system")
        content = [image_part(_shrink(image, self.max_side)), {"type": "text", "text": text}]
        return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]

    def predict(self, explanation: str, images: list[Image.Image], keys: list[Hashable] | None = None
                ) -> tuple[list[bool | None], list[str]]:
        if self.template["mode"] == "yes_no":
            user = self.template["user"]
            completions = self.backend.complete_many([self._messages(im, user.format(explanation=explanation))
                                                      for im in images])
            verdicts, errors = [], []
            for i, c in enumerate(completions):
                v = yes_no(c.text) if c.error is None else None
                verdicts.append(v)
                if v is None:
                    errors.append(f"image {i}: " + (c.error or f"not a yes/no answer: {c.text!r}"))
            return verdicts, errors
        wanted = self.checkable(explanation)
        if keys is None:  # unkeyed images are never cached: an id() may be reused by another image later
            invs = self._take_inventory(list(enumerate(images)))
        else:
            keys = list(keys)
            todo = {k: im for k, im in zip(keys, images) if k not in self._inventories}
            self._inventories.update(self._take_inventory(list(todo.items())))
            invs = {i: self._inventories[k] for i, k in enumerate(keys)}
        verdicts, errors = [], []
        for i in range(len(images)):
            inv, problem = invs[i]
            verdicts.append(None if inv is None else bool(wanted) and wanted <= inv)
            if inv is None:
                errors.append(f"image {i}: {problem}")
        return verdicts, errors

    def checkable(self, explanation: str) -> set[str]:
        """The concepts of an explanation that an inventory can contain (the template's vocabulary)."""
        return set(entity_concepts(explanation)) & {n for names in self.vocabulary.values() for n in names}

    def inventory(self, key: Hashable) -> set[str] | None:
        """The cached inventory of a keyed image (None if it failed or was never asked)."""
        return self._inventories.get(key, (None, None))[0]

    def _take_inventory(self, todo: list[tuple[Hashable, Image.Image]]) -> dict[Hashable, tuple[set[str] | None, str | None]]:
        """Ask the template's questions of each image: first those over the whole vocabulary, then those
        over the objects found. An image with any failed answer gets no inventory (a verdict of None)."""
        if not todo:
            return {}
        found = {k: set() for k, _ in todo}
        failed: dict[Hashable, str] = {}
        first = [q for q in self.template["questions"] if "over_found" not in q]
        second = [q for q in self.template["questions"] if "over_found" in q]
        for questions, from_found in ((first, False), (second, True)):
            asks = []  # (key, image, question, filled values)
            for (k, im), q in itertools.product(todo, questions):
                for values in self._expand(q, found[k] if from_found else None):
                    asks.append((k, im, q, values))
            completions = self.backend.complete_many([self._messages(im, q["ask"].format(**v)) for _, im, q, v in asks])
            for (k, _, q, values), c in zip(asks, completions):
                if c.error is not None or not (c.text or "").strip():
                    failed.setdefault(k, f"question {q['ask'].format(**values)!r}: {c.error or 'empty answer'}")
                elif "if_yes" in q:
                    if yes_no(c.text):
                        found[k].update(values[cls] for cls in q["if_yes"])
                else:
                    answer = " ".join(c.text.lower().replace(" - ", "-").strip(" .").split())
                    if answer in self.vocabulary.get(q["answer_is"], ()):
                        found[k].add(answer)
        return {k: (None, failed[k]) if k in failed else (found[k], None) for k, _ in todo}

    def _expand(self, question: dict, found: set[str] | None) -> list[dict[str, str]]:
        classes = question.get("over_found") if found is not None else question.get("over", [])
        pools = [[n for n in self.vocabulary[c] if found is None or n in found] for c in classes]
        return [dict(zip(classes, combo)) for combo in itertools.product(*pools)]


def detection_score(explanation: str, positives: list[Image.Image], negatives: list[Image.Image], judge: DetectionJudge,
                    positive_keys: list[Hashable] | None = None, negative_keys: list[Hashable] | None = None
                    ) -> DetectionResult:
    """Balanced accuracy of the judge's predictions on activating (`positives`) and non-activating
    (`negatives`) images; images it gives no verdict for are counted in n_failed and left out."""
    keys = None
    if positive_keys is not None or negative_keys is not None:
        if positive_keys is None or negative_keys is None:
            raise ValueError("pass keys for both the positive and the negative images, or for neither")
        keys = list(positive_keys) + list(negative_keys)
    truth = [True] * len(positives) + [False] * len(negatives)
    verdicts, errors = judge.predict(explanation, list(positives) + list(negatives), keys)
    pairs = [(t, v) for t, v in zip(truth, verdicts) if v is not None]
    tp = sum(t and v for t, v in pairs)
    tn = sum(not t and not v for t, v in pairs)
    n_pos = sum(t for t, _ in pairs)
    no_concepts = judge.template["mode"] == "inventory" and not judge.checkable(explanation)
    bacc = balanced_accuracy([t for t, _ in pairs], [v for _, v in pairs]) if pairs else None
    return DetectionResult(bacc, tp, n_pos - tp, tn, len(pairs) - n_pos - tn, len(truth) - len(pairs), errors, no_concepts)

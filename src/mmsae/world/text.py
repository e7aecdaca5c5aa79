"""Captions, question/answer pairs about every concept class, and the chat format the zoo models read."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from .scene import ObjectSpec, Scene
from .vocab import COLOURS, CONCEPT_CLASSES, COUNTS, KINDS, PARTS

BOS, EOS, PAD, UNK, IMAGE = "<s>", "</s>", "<pad>", "<unk>", "<image>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS, IMAGE)
EXPLAIN_QUESTION = "describe the common pattern of the highlighted regions ."
UNABLE = "unable to interpret"


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    type: str  # colour / shape / texture / material / size / position / part / scene / count / presence / prior
    target: str | None = None  # the object kind the question is about (None for image-level questions)


def caption(scene: Scene) -> str:
    """The full description: every object with every attribute, then the scene."""
    parts = [
        f"a {o.size} {o.colour} {o.texture} {o.material} {o.kind} at the {o.position}" for o in scene.objects
    ]
    return " and ".join(parts) + f" on {scene.background} ."


def partial_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A caption with attributes dropped at random, or a single present concept, for CLIP training."""
    if rng.random() < 0.3:
        names = sorted(scene.concepts())
        return names[rng.integers(len(names))]
    chunks = []
    for o in scene.objects:
        words = [a for a in (o.size, o.colour, o.texture, o.material) if rng.random() < 0.5]
        noun = o.kind if rng.random() < 0.8 else "object"
        chunk = " ".join(["a", *words, noun])
        if rng.random() < 0.3:
            chunk += f" with a {o.parts[rng.integers(2)]}"
        chunks.append(chunk)
    order = rng.permutation(len(chunks))
    text = " and ".join(chunks[i] for i in order)
    if rng.random() < 0.6:
        text += f" on {scene.background}"
    return text + " ."


def _unique(objects: list[ObjectSpec], attr: str) -> list[ObjectSpec]:
    counts = Counter(o.attributes()[attr] for o in objects)
    return [o for o in objects if counts[o.attributes()[attr]] == 1]


def questions(scene: Scene, rng: np.random.Generator) -> list[QA]:
    """Every question type the scene supports unambiguously, one of each, in random order."""
    out: list[QA] = []
    by_kind = _unique(scene.objects, "object")
    if by_kind:
        o = by_kind[rng.integers(len(by_kind))]
        out += [
            QA(f"what colour is the {o.kind} ?", o.colour, "colour", o.kind),
            QA(f"what texture does the {o.kind} have ?", o.texture, "texture", o.kind),
            QA(f"what is the {o.kind} made of ?", o.material, "material", o.kind),
            QA(f"how big is the {o.kind} ?", o.size, "size", o.kind),
            QA(f"where is the {o.kind} ?", o.position, "position", o.kind),
        ]
        asked = o.colour if rng.random() < 0.5 else tuple(COLOURS)[rng.integers(len(COLOURS))]
        out.append(QA(f"is the {o.kind} {asked} ?", "yes" if asked == o.colour else "no", "prior", o.kind))
    by_colour = _unique(scene.objects, "colour")
    if by_colour:
        o = by_colour[rng.integers(len(by_colour))]
        out.append(QA(f"what object is {o.colour} ?", o.kind, "shape", o.kind))
    out.append(QA("what is the background ?", scene.background, "scene"))
    out.append(QA("how many objects are there ?", COUNTS[len(scene.objects)], "count"))
    present = scene.concepts()
    part = CONCEPT_CLASSES["part"][rng.integers(len(CONCEPT_CLASSES["part"]))]
    out.append(QA(f"is there a {part} ?", "yes" if part in present else "no", "part"))
    out.append(_presence(scene, rng))
    return [out[i] for i in rng.permutation(len(out))]


def _presence(scene: Scene, rng: np.random.Generator) -> QA:
    """'is there a red star ?' — half positives, negatives mostly one attribute away (binding)."""
    pairs = {(o.colour, o.kind) for o in scene.objects}
    if rng.random() < 0.5:
        colour, kind = sorted(pairs)[rng.integers(len(pairs))]
    else:
        for _ in range(20):
            colour, kind = sorted(pairs)[rng.integers(len(pairs))]
            if rng.random() < 0.5:
                colour = tuple(COLOURS)[rng.integers(len(COLOURS))]
            else:
                kind = KINDS[rng.integers(len(KINDS))]
            if (colour, kind) not in pairs:
                break
    return QA(f"is there a {colour} {kind} ?", "yes" if (colour, kind) in pairs else "no", "presence", kind)


def chat_prompt(question: str, n_images: int = 1) -> str:
    """The single-turn prompt the zoo models answer: the model continues after 'assistant :'."""
    return f"{BOS} user : {' '.join([IMAGE] * n_images)} {question} assistant :"


def chat_turns(qas: list[QA], n_images: int = 1) -> list[tuple[str, str]]:
    """Multi-turn training text as (prompt chunk, answer chunk) pairs; the image opens the first turn."""
    turns = []
    for i, qa in enumerate(qas):
        head = f"{BOS} user : {' '.join([IMAGE] * n_images)} " if i == 0 else "user : "
        turns.append((f"{head}{qa.question} assistant :", f"{qa.answer} {EOS}"))
    return turns


CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ ' ' + m['role'] + ' :' }}"
    "{% if m['content'] is string %}{{ ' ' + m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}{{ ' <image>' }}{% else %}{{ ' ' + c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{% if m['role'] == 'assistant' %}{{ ' ' + eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ ' assistant :' }}{% endif %}"
)


def vocabulary() -> list[str]:
    """Every word the world's text can contain (the zoo's tokenizer is built from this list)."""
    words = set("user assistant : ? . , - a the and on at with object objects is are there what where how many "
                "big colour texture does have made of background yes no unable to interpret".split())
    words |= set(EXPLAIN_QUESTION.split())
    for names in CONCEPT_CLASSES.values():
        for name in names:
            words |= set(name.replace("-", " - ").split())
    words |= set(COUNTS)
    words |= {p for pair in PARTS.values() for p in pair}
    return sorted(words)

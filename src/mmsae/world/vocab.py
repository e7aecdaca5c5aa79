"""The world's concept vocabulary: every name is unique across classes, so a name alone finds its mask."""

from __future__ import annotations

SCENES = ("grass", "sand", "sky", "night", "wood", "snow")
KINDS = ("star", "house", "tree", "mushroom", "car", "fish")
# (primary part, secondary part); the secondary part is rendered in a darker shade of the object's colour
PARTS = {
    "star": ("tips", "core"),
    "house": ("wall", "roof"),
    "tree": ("crown", "trunk"),
    "mushroom": ("cap", "stem"),
    "car": ("chassis", "wheel"),
    "fish": ("torso", "tail"),
}
MATERIALS = ("matte", "metal", "glass")
TEXTURES = ("plain", "striped", "dotted", "checkered")
COLOURS = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (240, 220, 40),
    "green": (40, 175, 60),
    "cyan": (40, 205, 215),
    "blue": (40, 70, 225),
    "purple": (145, 60, 205),
    "pink": (250, 120, 195),
}
SIZES = ("small", "medium", "large")
POSITIONS = (
    ("top-left", "top", "top-right"),
    ("left", "center", "right"),
    ("bottom-left", "bottom", "bottom-right"),
)
COUNTS = ("zero", "one", "two", "three")

# The six concept classes of the Multimodal-SAE table, plus the world's extra attributes.
CONCEPT_CLASSES: dict[str, tuple[str, ...]] = {
    "scene": SCENES,
    "object": KINDS,
    "part": tuple(p for pair in PARTS.values() for p in pair),
    "material": MATERIALS,
    "texture": TEXTURES,
    "colour": tuple(COLOURS),
    "size": SIZES,
    "position": tuple(p for row in POSITIONS for p in row),
}
PAPER_CLASSES = ("scene", "object", "part", "material", "texture", "colour")

CLASS_OF: dict[str, str] = {name: cls for cls, names in CONCEPT_CLASSES.items() for name in names}
assert len(CLASS_OF) == sum(len(v) for v in CONCEPT_CLASSES.values()), "concept names must be unique"
PART_OWNER: dict[str, str] = {p: kind for kind, pair in PARTS.items() for p in pair}


def concept_class(name: str) -> str:
    """The class ('colour', 'part', ...) of a concept name; a clear error for unknown names."""
    try:
        return CLASS_OF[name]
    except KeyError:
        raise ValueError(
            f"unknown concept {name!r}; known concepts: {', '.join(sorted(CLASS_OF))}"
        ) from None

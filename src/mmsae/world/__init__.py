"""The embedded world: procedurally generated images with exact concept masks, captions and Q/A.

May import (the layers of pyproject.toml's importlinter contract): io, util, defaults; not its sibling viz.
"""

from .scene import ObjectSpec, Scene, World, WorldConfig
from .vocab import CONCEPT_CLASSES, PAPER_CLASSES, concept_class

__all__ = ["World", "WorldConfig", "Scene", "ObjectSpec", "CONCEPT_CLASSES", "PAPER_CLASSES", "concept_class"]

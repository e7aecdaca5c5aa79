"""Small shared utilities: progress bars, device choice and shape checks (one copy each; see CONVENTIONS.md).

Imports nothing of mmsae: every package may use it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def progress_bar(label: str, *fields: str, enabled: bool = True, stderr: bool = True, transient: bool = False):
    """A rich Progress with the project's columns: label, bar, done/total, time left, then `fields`
    (names of task fields, shown as `{task.fields[name]}`). Use it as a context manager."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    columns += [TextColumn(f"{{task.fields[{f}]}}") for f in fields]
    return Progress(*columns, console=Console(stderr=stderr), disable=not enabled, transient=transient)


@contextmanager
def progress(enabled: bool, total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A one-task progress bar; yields advance(n=1). Disabled, it costs nothing."""
    if not enabled:
        yield lambda n=1: None
        return
    with progress_bar(label, enabled=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n=1: bar.advance(task, n)


def pick_device(name: str | None = "auto", local_rank: bool = False) -> str:
    """'auto' (or None): CUDA when available (cuda:LOCAL_RANK under torchrun with `local_rank`), else 'cpu';
    any other name is returned as given."""
    if name not in (None, "auto"):
        return str(name)
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if local_rank else "cuda"


class ShapeError(ValueError):
    """A tensor of the wrong shape at a public boundary (SAE.encode/decode, Adapter.capture)."""


def check_shape(name: str, tensor, expected: str, **sizes: int | None) -> None:
    """ShapeError naming `name`, the expected and the got shape unless `tensor.shape` matches `expected`.

    `expected` is a jaxtyping-style shape string ("B D", "B S D"); an axis given in `sizes` (D=64) must have
    that size, the others may have any. Plain integer compares, cheap enough for every call: about 0.5 % of a
    small TopK encode (B 8, D 64, F 256), where jaxtyping's isinstance check costs ~4 us (~4 %) and checking
    its signature annotations would need beartype, which mmsae does not depend on."""
    axes = expected.split()
    shape = tuple(tensor.shape)
    if len(shape) == len(axes) and all(sizes.get(a) is None or sizes[a] == s for a, s in zip(axes, shape)):
        return
    want = ", ".join(f"{a}={sizes[a]}" if sizes.get(a) is not None else a for a in axes)
    raise ShapeError(f"{name} must have shape [{want}], got [{', '.join(map(str, shape))}]")

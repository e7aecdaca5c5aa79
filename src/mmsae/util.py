"""Small shared utilities: progress bars and device choice (one copy each; see CONVENTIONS.md).

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

"""A consumer thread behind a bounded queue: the model's loop hands each batch over and runs the next
forward while this thread stores the last one (shard assembly and writes, the index's SAE encode and
top-N, state saves). The queue bounds the memory held in flight; `close()` is the flush.

Errors are the consumer's to raise: the first one stops the handling (items after it are dropped, so
nothing is written after a failure) and is raised in the producer at its next `put` or at `close`,
with the consumer's traceback."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

_STOP = object()
_POLL_S = 0.1  # how often a blocked put looks for a consumer error (so a failure never deadlocks it)


class Background:
    def __init__(self, handle: Callable[[Any], None], maxsize: int = 2, name: str = "mmsae-writer",
                 threads: int | None = None):
        """`threads`: torch's intra-op threads for this thread's own operations (a per-thread setting);
        a consumer of small operations takes 1, so that they do not fork a second team of threads onto
        the cores the forward's team is using (None: the process's setting)."""
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize!r}")
        self._handle = handle
        self._queue: queue.Queue = queue.Queue(maxsize)
        self._error: BaseException | None = None
        self._abort = threading.Event()
        self._closed = False
        self._threads = threads
        self.n_handled = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        if self._threads is not None:
            import torch

            torch.set_num_threads(self._threads)
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._error is not None or self._abort.is_set():
                continue  # keep draining so that a producer blocked on put() wakes up
            try:
                self._handle(item)
                self.n_handled += 1
            except BaseException as e:  # KeyboardInterrupt from a hook too: the producer re-raises it
                self._error = e

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, item) -> None:
        """Queue an item; blocks while the queue is full; raises the consumer's error if it failed."""
        if self._closed:
            raise RuntimeError("put() after close()")
        while True:
            self._raise()
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Wait until every queued item is handled (written, saved) and raise the consumer's error if any."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)  # the loop always drains, so this cannot block for good
            self._thread.join()
        self._raise()

    def abort(self) -> None:
        """Drop what is still queued and stop (the producer failed; resume redoes the unfinished unit)."""
        self._abort.set()
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join()

    def __enter__(self) -> Background:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

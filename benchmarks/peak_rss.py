"""Peak resident memory of a block of code, this process and its children (data-loader workers) together.

    with PeakRSS() as mem:
        run()
    mem.peak_mb

Samples every 20 ms with psutil when it is installed (so each block gets its own peak); without it,
falls back to getrusage's lifetime maximum of this process (children not counted)."""

from __future__ import annotations

import resource
import threading


class PeakRSS:
    def __init__(self, interval_s: float = 0.02):
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self.source = "psutil"

    def _sample(self) -> float:
        import psutil

        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:  # a worker that just exited
                pass
        return total / 2**20

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_mb = max(self.peak_mb, self._sample())

    def __enter__(self) -> PeakRSS:
        try:
            import psutil  # noqa: F401
        except ImportError:
            self.source = "getrusage"
            return self
        self._stop = threading.Event()
        self.peak_mb = self._sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.source == "getrusage":
            self.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            return
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._sample())

"""Timing and memory measurement, and the shape of one result row."""
from __future__ import annotations

import ctypes
import gc
import logging
import os
import statistics
import threading
import time
from dataclasses import dataclass, field

logger = logging.getLogger("benchmarks")


@dataclass
class Row:
    """One line of the table: a syncrouter path against a baseline, rates in rows/s.

    ``ratio`` is syncrouter's rate divided by the baseline's: below 1 syncrouter
    is slower (0.5 = half the baseline's rate), above 1 it is faster.
    """

    key: str
    group: str
    syncrouter: str
    baseline: str
    n: int
    syncrouter_seconds: list[float] = field(default_factory=list)
    baseline_seconds: list[float] = field(default_factory=list)
    notes: dict = field(default_factory=dict)
    #: Why the syncrouter side could not be measured (its exception), if it failed.
    error: str | None = None

    @property
    def syncrouter_median(self) -> float | None:
        return statistics.median(self.syncrouter_seconds) if self.syncrouter_seconds else None

    @property
    def baseline_median(self) -> float | None:
        return statistics.median(self.baseline_seconds) if self.baseline_seconds else None

    @property
    def ratio(self) -> float | None:
        if self.syncrouter_median is None or self.baseline_median is None:
            return None
        return self.baseline_median / self.syncrouter_median

    def rate(self, median: float | None) -> float | None:
        return None if median is None else self.n / median

    def as_dict(self) -> dict:
        return {
            "key": self.key, "group": self.group, "syncrouter": self.syncrouter,
            "baseline": self.baseline, "n": self.n, "repeats": len(self.syncrouter_seconds),
            "syncrouter_seconds": self.syncrouter_seconds,
            "baseline_seconds": self.baseline_seconds,
            "syncrouter_median_s": self.syncrouter_median,
            "baseline_median_s": self.baseline_median,
            "syncrouter_rows_per_s": self.rate(self.syncrouter_median),
            "baseline_rows_per_s": self.rate(self.baseline_median),
            "ratio": self.ratio, "notes": self.notes, "error": self.error,
        }


def timed(function, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def attempt(row: Row, function, *args) -> float | None:
    """Time the syncrouter side of ``row``; on an exception record it on the row, go on.

    Used for paths still under development (bulk capture): one failing path should
    not hide every other measurement. The run still exits non-zero.
    """
    try:
        seconds, _ = timed(function, *args)
    except Exception as exc:
        logger.warning("%s failed", row.key, exc_info=True)
        row.error = f"{type(exc).__name__}: {exc}"
        return None
    row.syncrouter_seconds.append(seconds)
    return seconds


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _release_free_memory() -> None:
    """Collect garbage and hand freed heap back to the OS, so the delta starts from the floor."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakRSS:
    """The process's resident set size while the block runs: ``start``, ``peak`` and
    ``delta`` (peak above start), in bytes.

    Both are needed: a memory budget is about the whole process (``peak``), how much
    the measured call holds is ``delta``. Sampled every 5 ms from /proc/self/statm by
    a thread: unlike tracemalloc it does not slow the measured code down, and it
    counts memory held by C extensions (psycopg, sqlite3). Linux only; elsewhere all
    three stay None.
    """

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.start: int | None = None
        self.peak: int | None = None
        self.delta: int | None = None

    def __enter__(self):
        if not os.path.exists("/proc/self/statm"):
            return self
        _release_free_memory()
        self.start = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc):
        if hasattr(self, "_thread"):
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes())
            self.delta = self.peak - self.start
        return False

"""Helpers shared by the benchmarks: repo root on sys.path, interleaved timing, JSON output."""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def interleaved_medians(fns: dict[str, Callable[[], None]], rounds: int = 7,
                        warmup: int = 1) -> dict[str, float]:
    """Median seconds of each function, timed in alternation so that drift hits all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def machine() -> dict:
    import torch
    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "device": "cuda" if torch.cuda.is_available() else "cpu"}


def emit(result: dict) -> None:
    print(json.dumps(result, indent=2))

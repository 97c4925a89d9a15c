"""Timing and reporting helpers shared by the benchmarks in bench/."""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def device_description() -> dict:
    """What the numbers were measured on: JAX backend and device kind, CPU model, versions."""
    import jax

    dev = jax.devices()[0]
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return {"jax_backend": dev.platform, "jax_device": dev.device_kind, "device_count": jax.device_count(),
            "cpu": cpu, "cpu_cores_visible": len(os.sched_getaffinity(0)), "jax": jax.__version__,
            "python": platform.python_version()}


def time_calls(fn, repeats: int, warmup: int = 1, deadline: float | None = None) -> dict:
    """Median / min wall time of ``fn()`` (which must block until its result is ready). ``deadline`` (a
    ``time.perf_counter()`` value): no further call starts after it, though at least one is timed; ``repeats`` in
    the result is how many were."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if times and deadline is not None and time.perf_counter() >= deadline:
            break
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": len(times)}


def write_result(name: str, result: dict, folder: Path = RESULTS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path

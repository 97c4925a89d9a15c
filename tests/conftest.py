"""Shared fixtures. Parity tests need the PyTorch references (the ``test`` extra); they skip without them."""

from __future__ import annotations

import os

# torch's OpenMP workers spin while XLA computes in the same process and starve it (bench/README.md): be passive.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# XLA's persistent compilation cache: many tests compile the same programs again (a pipeline reloaded by the CLI,
# the 8-fake-device subprocesses, a model rebuilt from the same folder), and on 2 CPU cores compiling is most of the
# suite's time. The cache key is the whole HLO plus the XLA version and flags, so a hit is the identical executable.
# Set through the environment so the subprocesses that tests start share it; SANA_JAX_TEST_COMPILE_CACHE="" turns
# it off.
_CACHE = os.environ.get("SANA_JAX_TEST_COMPILE_CACHE",
                        os.path.join(os.path.dirname(os.path.dirname(__file__)), ".pytest_cache", "jax-compile"))
if _CACHE:
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")


def _accelerator_plugin_installed() -> bool:
    import pkgutil

    return any(m.name.startswith(("jax_cuda", "jax_rocm", "libtpu")) for m in pkgutil.iter_modules())


# The suite's tiny models spend far more time in XLA's CPU compiler than running, and every parameter of an eagerly
# initialised model is one more small compiled program. LLVM optimisation level 0 compiles them 1.7-4× faster
# (tests/test_wan_vae.py + tests/test_training.py: 433 s → 253 s on 2 cores) for slightly slower kernels. CPU runs
# only (a GPU's kernels are what its tests measure); SANA_JAX_TEST_XLA_OPT=1 keeps XLA's default. The subprocesses
# that tests start inherit it through the environment.
if os.environ.get("SANA_JAX_TEST_XLA_OPT", "0") == "0" and not _accelerator_plugin_installed():
    # LLVM's expensive passes off as well: the cold distillation trainer test 69 s → 56 s
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
                               " --xla_llvm_disable_expensive_passes=true").strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
os.environ.setdefault("TQDM_DISABLE", "1")


def max_rel_err(ours, ref) -> float:
    """max |ours − ref| / max |ref| (the parity metric of docs/architecture.md, "Testing"; tests/parity.py)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.max(np.abs(ours - ref)) / max(np.max(np.abs(ref)), 1e-30))


@pytest.fixture
def rel_err():
    return max_rel_err


# Scheduling (the suite runs as `pytest -n 2 --dist loadfile`): pytest-xdist hands whole files to whichever worker is
# free. By default it first orders the files by their number of tests, which put the files of a few long tests (the
# two-process runs, the distillation CLI) last, leaving one worker alone with them for minutes at the end. Instead the
# files are taken in collection order, and the longest ones (per `--durations` of a CI run on 2 cores) are collected
# first, so that the short files fill in at the end. A file missing here only costs balance, never a result.
LONGEST_FIRST = ("test_distill_cli.py", "test_wan_vae.py", "test_multihost.py", "test_distill_trainer.py",
                 "test_ltx2_vae.py", "test_multihost_training.py", "test_training.py", "test_distill_wan.py",
                 "test_parallel_pipeline.py", "test_streaming.py", "test_parallel.py", "test_parallel_refiner.py",
                 "test_distill_gaussian.py", "test_distill_student.py", "test_bench_gpu.py")


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist's reordering by number of tests: off
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))  # stable: the rest keep their order

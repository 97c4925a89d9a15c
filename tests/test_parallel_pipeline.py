"""The pipeline and the two-stage CLI on 8 fake CPU devices (own processes). Training on a mesh:
tests/test_multihost_training.py, distillation: tests/test_distill_cli.py (two processes, FSDP)."""

from __future__ import annotations

import pytest

from tests.helpers import run_parallel_cases as run_cases


@pytest.mark.parametrize("kind", ["pipeline", "cli"])
def test_sharded_pipeline_and_cli_equal_unsharded(kind):
    """The whole SanaVideoPipeline(mesh=...) denoising against one device, on a mesh with the guidance batch over
    data and frames over context (every mesh's sampler: tests/test_parallel.py); `generate --refine --mesh` on one
    with tensor and context (`generate --mesh` alone: tests/test_multihost.py, over two processes)."""
    for spec, result in run_cases(kind, ["data=2,context=4"] if kind == "pipeline" else ["tensor=2,context=4"]).items():
        for name, err in result.items():
            assert err <= 1e-5, (kind, spec, name, err)


"""The pipeline, the two-stage CLI and training on 8 fake CPU devices (own processes). Distillation on a mesh:
tests/test_distill_cli.py (two processes, FSDP)."""

from __future__ import annotations

import pytest

from tests.helpers import MESHES, run_parallel_cases as run_cases



@pytest.mark.parametrize("kind", ["pipeline", "cli"])
def test_sharded_pipeline_and_cli_equal_unsharded(kind):
    """The whole SanaVideoPipeline(mesh=...) denoising on every mesh against one device; `generate --refine --mesh`
    runs on one mesh with every axis (`generate --mesh` alone: tests/test_multihost.py, over two processes)."""
    for spec, result in run_cases(kind, MESHES if kind == "pipeline" else ["tensor=2,context=4"]).items():
        for name, err in result.items():
            assert err <= 1e-5, (kind, spec, name, err)


def test_sharded_training_equals_unsharded():
    """Data parallelism with FSDP (weights and AdamW state sharded over fsdp by the logical-axis rules): losses and
    gradient norms of both steps match to 1e-5; parameters to 1e-3 (Adam divides by √v, so where a gradient is
    near zero the summation order of the sharded batch mean shows up in the update). Pure data parallelism:
    tests/test_multihost_training.py (over two processes)."""
    for spec, r in run_cases("train", ["data=2,fsdp=4"]).items():
        assert r["loss_grad"] <= 1e-5 and r["params"] <= 1e-3 and r["sharded"] == 1.0, (spec, r)


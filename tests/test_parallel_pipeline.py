"""The pipeline, the CLI and training on 8 fake CPU devices (own processes)."""

from __future__ import annotations

import pytest

from tests.helpers import MESHES, run_parallel_cases as run_cases



@pytest.mark.parametrize("kind", ["pipeline", "cli"])
def test_sharded_pipeline_and_cli_equal_unsharded(kind):
    """The whole SanaVideoPipeline(mesh=...) denoising on every mesh against one device; `generate --mesh` and
    `generate --refine --mesh` run on one mesh with every axis (the numbers per mesh are the pipeline case's; each
    CLI mesh compiles the whole pipeline again)."""
    for spec, result in run_cases(kind, MESHES if kind == "pipeline" else ["tensor=2,context=4"]).items():
        for name, err in result.items():
            assert err <= 1e-5, (kind, spec, name, err)


def test_sharded_training_equals_unsharded():
    """Data parallelism and FSDP (weights and AdamW state sharded over fsdp by the logical-axis rules): losses and
    gradient norms of both steps match to 1e-5; parameters to 1e-3 (Adam divides by √v, so where a gradient is
    near zero the summation order of the sharded batch mean shows up in the update)."""
    for spec, r in run_cases("train", ["data=8", "data=2,fsdp=4"]).items():
        assert r["loss_grad"] <= 1e-5 and r["params"] <= 1e-3 and r["sharded"] == 1.0, (spec, r)


def test_sharded_distillation_equals_unsharded():
    """Distillation (teacher, student, critic and both optimisers FSDP-sharded, the batch over data/fsdp): the
    metrics of an ODE, a generator and a critic step match to 1e-4, the weights to 1e-3 (as for training). One mesh
    with both axes (pure data parallelism is the training test's ``data=8``): each mesh compiles every phase again."""
    for spec, r in run_cases("distill", ["data=2,fsdp=4"]).items():
        assert r["metrics"] <= 1e-4 and r["params"] <= 1e-3 and r["sharded"] == 1.0, (spec, r)

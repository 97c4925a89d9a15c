"""Sharded execution on 8 fake CPU devices (own process: the device count is fixed when jax starts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sana_jax.errors import InputError
from sana_jax.parallel import make_mesh, parse_mesh_spec

ROOT = Path(__file__).resolve().parents[1]
MESHES = ["data=2,context=4", "context=8", "tensor=2,context=4"]


def run_cases(kind: str, meshes=MESHES) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "parallel_cases.py"), kind, *meshes],
                         capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def dit_results():
    return run_cases("dit")


@pytest.fixture(scope="module")
def refiner_results():
    return run_cases("refiner")


@pytest.mark.parametrize("kind", ["sampling", "vae", "pipeline", "cli"])
def test_sharded_equals_unsharded(kind):
    """A 4-step CFG sampling loop, the LTX-2 VAE decode and the whole SanaVideoPipeline(mesh=...) denoising, each on
    every mesh, against one device; `generate --mesh` runs, and `generate --refine --mesh` (once)."""
    for spec, result in run_cases(kind).items():
        for name, err in result.items():
            assert err <= 1e-5, (kind, spec, name, err)


def test_sharded_training_equals_unsharded():
    """Data parallelism and FSDP (weights and AdamW state sharded over fsdp by the logical-axis rules): losses and
    gradient norms of both steps match to 1e-5; parameters to 1e-3 (Adam divides by √v, so where a gradient is
    near zero the summation order of the sharded batch mean shows up in the update)."""
    for spec, r in run_cases("train", ["data=8", "data=2,fsdp=4"]).items():
        assert r["loss_grad"] <= 1e-5 and r["params"] <= 1e-3 and r["sharded"] == 1.0, (spec, r)


@pytest.mark.parametrize("spec", MESHES)
def test_sharded_dit_forward_equals_unsharded(dit_results, spec):
    r = dit_results[spec]
    assert r["rel"] <= 1e-5, r
    assert r["sharding"] == "P('data', 'context')"


@pytest.mark.parametrize("spec", MESHES)
def test_no_all_gather_of_the_token_sequence(dit_results, spec):
    """Context parallelism: one all-reduce of the linear-attention state per layer and a one-frame halo exchange
    for the temporal conv; the token sequence is never gathered."""
    r = dit_results[spec]
    assert r["token_gathers"] == [] and r["all_gathers"] == 0, r
    assert r["all_reduces"] >= 1 and r["permutes"] >= 1, r


@pytest.mark.parametrize("spec", MESHES)
def test_sharded_refiner_equals_unsharded(refiner_results, spec):
    """The LTX-2 refiner forward (both streams) and the 3-step refine stage with Ulysses self-attention, tokens over
    context, heads/MLP over tensor, batch over data: the one-device results."""
    r = refiner_results[spec]
    for name in ("rel_video", "rel_audio", "rel_refine"):
        assert r[name] <= 1e-5, (name, r)


@pytest.mark.parametrize("spec", MESHES)
def test_refiner_self_attention_is_ulysses(refiner_results, spec):
    """The compiled refiner swaps tokens↔heads with all-to-alls (q/k/v stacked, and the output) and never
    all-gathers the video token sequence (XLA's own partitioning gathers K and V)."""
    r = refiner_results[spec]
    assert r["ulysses_all_to_alls"] == 2 and r["token_gathers"] == [], r


@pytest.mark.parametrize("spec", MESHES)
def test_sharded_load_reads_only_each_shard(refiner_results, spec):
    """Loading onto the mesh gives the unsharded parameters bit for bit, each with the rules' sharding, reads every
    checkpoint byte exactly once and through slices only (no whole-tensor read); heads/MLP weights split over
    ``tensor`` are read as halves."""
    r = refiner_results[spec]
    assert r["load_max_abs_diff"] == 0.0 and r["misplaced"] == [] and r["full_reads"] == 0, r
    assert r["bytes_read"] == r["bytes_total"], r
    if "tensor=2" in spec:
        assert r["split_reads"] > 0 and r["max_split_fraction"] == 0.5, r
    else:
        assert r["split_reads"] == 0, r


def test_ulysses_plan():
    """Ulysses needs the heads per device group to divide by the context size; otherwise it reports why."""
    from jax.sharding import AbstractMesh

    from sana_jax.parallel import AXES
    from sana_jax.parallel.ulysses import plan, self_attention_fn

    def mesh(data=1, context=1, tensor=1):
        return AbstractMesh((data, 1, context, tensor), AXES)

    assert plan(mesh(context=8), 32) == (True, None, plan(mesh(context=8), 32).reason)
    assert plan(mesh(context=4, tensor=2), 32).head_axis == "tensor"
    assert plan(mesh(context=4, tensor=2), 4) == (True, None, plan(mesh(context=4, tensor=2), 4).reason)
    off = plan(mesh(context=8), 4)
    assert not off.enabled and "do not divide" in off.reason
    assert not plan(mesh(data=8), 32).enabled and plan(None, 32).reason == "no mesh"
    assert self_attention_fn(mesh(data=8), 32) is None
    with pytest.warns(UserWarning, match="do not divide"):
        assert self_attention_fn(mesh(context=3), 32) is None


def test_mesh_spec_parsing_and_errors():
    assert parse_mesh_spec("data=2,context=4") == {"data": 2, "fsdp": 1, "context": 4, "tensor": 1}
    for bad, match in [("data=2,data=2", "twice"), ("pipeline=2", "unknown axis"), ("data=x", "name=integer"),
                       ("data=0", "≥ 1")]:
        with pytest.raises(InputError, match=match):
            parse_mesh_spec(bad)
    with pytest.raises(InputError, match="needs 16 devices"):
        make_mesh("data=16")


def test_two_process_distributed_forward():
    """Two processes on localhost (CPU, gloo) run the context-parallel DiT over a mesh spanning both; each one's
    shard equals the single-process result."""
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    procs = [subprocess.Popen([sys.executable, str(ROOT / "tests" / "distributed_case.py"), str(port), str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert {r["pid"] for r in results} == {0, 1}
    for r in results:
        assert r["rel"] <= 1e-5, r

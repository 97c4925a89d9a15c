"""The LTX-2 refiner sharded on 8 fake CPU devices: Ulysses attention, tensor parallelism, shard-by-shard loading."""

from __future__ import annotations

import pytest

from tests.helpers import MESHES, run_parallel_cases as run_cases



@pytest.fixture(scope="module")
def refiner_results():
    return run_cases("refiner")


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

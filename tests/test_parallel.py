"""Sharded execution on 8 fake CPU devices (own process: the device count is fixed when jax starts). Over two
processes joined by ``jax.distributed``: tests/test_multihost.py."""

from __future__ import annotations

import pytest

from sana_jax.errors import InputError
from sana_jax.parallel import make_mesh, parse_mesh_spec

from tests.helpers import MESHES, run_parallel_cases as run_cases


@pytest.fixture(scope="module")
def dit_results():
    return run_cases("dit")


@pytest.mark.parametrize("kind", ["sampling", "vae"])
def test_sharded_equals_unsharded(kind):
    """A 4-step CFG sampling loop on every mesh and the LTX-2 VAE decode with its frames split 4 and 8 ways, against
    one device (the VAE shards over data and context only)."""
    meshes = MESHES if kind == "sampling" else ["data=2,context=4", "context=8"]
    for spec, result in run_cases(kind, meshes).items():
        for name, err in result.items():
            assert err <= 1e-5, (kind, spec, name, err)


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

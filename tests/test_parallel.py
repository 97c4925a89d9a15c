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


@pytest.fixture(scope="module")
def dit_results():
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "parallel_cases.py"), *MESHES], capture_output=True,
                         text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


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


def test_mesh_spec_parsing_and_errors():
    assert parse_mesh_spec("data=2,context=4") == {"data": 2, "fsdp": 1, "context": 4, "tensor": 1}
    for bad, match in [("data=2,data=2", "twice"), ("pipeline=2", "unknown axis"), ("data=x", "name=integer"),
                       ("data=0", "≥ 1")]:
        with pytest.raises(InputError, match=match):
            parse_mesh_spec(bad)
    with pytest.raises(InputError, match="needs 16 devices"):
        make_mesh("data=16")

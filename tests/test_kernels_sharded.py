"""The linear-attention kernel inside sharded and streaming programs (sana_jax/kernels/sharded.py).

The numeric and HLO checks run on 8 fake CPU devices in their own process (tests/kernels_sharded_cases.py; the kernel
in Pallas interpret mode, the reference on one device): the dispatcher on a mesh, the tiny DiT through
``sharded_forward``, and the block-causal model's streaming step. Tolerance: float32, ≤ 1e-5 max relative error
(measured 2e-7 – 5e-7: the same sums in another order).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AbstractMesh

from sana_jax.kernels.dispatch import force_impl, linear_attention_mesh, resolve_impl
from sana_jax.kernels.sharded import local_pieces, plan, sharded_linear_attention_pallas
from sana_jax.parallel import AXES
from tests.helpers import ROOT
from tests.test_kernels import cuda_lowering

TOL = 1e-5
#: one process for every case: jax starts once and the DiT's one-device reference is computed once
CASES = ["ops:context=8", "ops:tensor=2,context=4", "dit:data=2,context=4", "stream:data=2,context=4"]


@pytest.fixture(scope="module")
def results():
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "kernels_sharded_cases.py"), *CASES],
                         capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def mesh(data=1, fsdp=1, context=1, tensor=1):
    return AbstractMesh((data, fsdp, context, tensor), AXES)


def test_sharded_kernel_equals_reference(results):
    """Non-causal (context=8), the streaming step's one chunk + carried-in state with its own state returned
    (heads over tensor, tokens over context), several chunks whose boundaries fall inside a device (window 1, a
    carried-in state), and the gradient: all equal the XLA reference on one device."""
    ops = {**results["ops:context=8"], **results["ops:tensor=2,context=4"]}
    for variant in ("non_causal", "stream", "chunked"):
        assert ops[variant]["rel"] <= TOL, (variant, ops[variant])
    assert ops["grad_rel"] <= TOL


def test_one_all_reduce_and_the_kernel_inside_the_shard_map(results):
    """One chunk: the kernels run inside the shard_map, and the only collective is one all-reduce of the state (no
    all-gather). Several chunks across devices: one all-gather of the pieces' states instead (states, not tokens)."""
    for name in ("non_causal", "stream"):
        r = {**results["ops:context=8"], **results["ops:tensor=2,context=4"]}[name]
        assert r["attention_all_reduces"] == 1 and r["all_gathers"] == 0, (name, r)
        assert r["state_kernel"] > 0 and r["output_kernel"] > 0, (name, r)
    chunked = results["ops:context=8"]["chunked"]
    assert chunked["attention_all_reduces"] == 0 and chunked["all_gathers"] == 1, chunked


def test_dit_on_a_mesh_with_the_kernel(results):
    """sharded_forward with the kernel: the one-device output; the kernels inside the sharded program; in the
    scanned layer (the HLO while body: every layer runs it) exactly one all-reduce for the linear attention, and no
    all-gather at all (the token sequence is never gathered)."""
    r = results["dit:data=2,context=4"]
    assert r["rel"] <= TOL, r
    assert r["state_kernel"] > 0 and r["output_kernel"] > 0, r
    assert r["attention_all_reduces"] == r["attention_all_reduces_in_loop"] == 1, r
    assert r["all_gathers"] == 0, r


def test_streaming_step_with_the_kernel(results):
    """The block-causal model's chunk step (against a committed past) with the chunk-causal kernel, sharded over
    data × context, equals the reference step on one device: velocity and the next state."""
    assert results["stream:data=2,context=4"]["rel"] <= TOL


def test_plan_and_fallbacks():
    """Axes that divide split, the others replicate; tokens that do not divide by context fall back to the XLA
    reference; no mesh (or one device): the plain kernel."""
    shape = (2, 48, 4, 12)
    p = plan(mesh(data=2, context=4), shape)
    assert (p.batch, p.tokens, p.heads, p.sharded, p.reference) == (("data",), "context", None, True, False)
    p = plan(mesh(data=2, fsdp=2, tensor=2), shape)  # batch 2 over data only (data × fsdp = 4 does not divide)
    assert (p.batch, p.tokens, p.heads) == (("data",), None, "tensor")
    assert plan(mesh(tensor=8), shape).heads is None and not plan(mesh(tensor=8), shape).sharded
    assert plan(mesh(context=5, data=1), (2, 48, 4, 12)).reference
    assert not plan(None, shape).sharded and not plan(mesh(), shape).sharded
    q = jnp.zeros((1, 45, 2, 8))
    with force_impl("interpret"):
        assert resolve_impl("auto", q, q) == "interpret"
        with linear_attention_mesh(mesh(context=2)):
            assert resolve_impl("auto", q, q) == "reference"  # 45 tokens do not split over 2
        with linear_attention_mesh(mesh(context=3)):
            assert resolve_impl("auto", q, q) == "interpret"
    if jax.default_backend() == "cpu":
        with linear_attention_mesh(mesh(context=3)):
            assert resolve_impl("auto", q, q) == "reference"  # auto on CPU: the reference, mesh or not


def test_local_pieces():
    """Chunks (20, 16, 12) over 8 shards of 6 tokens: every shard cuts at 2 (shard 3 holds tokens 18-23, chunk 0
    ends at 20); the table names each piece's chunk."""
    pieces, table = local_pieces((20, 16, 12), 6, 8)
    assert pieces == (2, 4)
    np.testing.assert_array_equal(table[:, 0], [0, 0, 0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(table[:, 1], [0, 0, 0, 1, 1, 1, 2, 2])
    pieces, table = local_pieces((48,), 12, 4)  # non-causal: one piece, chunk 0 everywhere
    assert pieces == (12,) and table.tolist() == [[0]] * 4


def test_sharded_kernel_lowers_to_triton_without_a_gpu():
    """The sharded kernel (tokens over context=2, the 720p SANA head shape, two chunks) builds its Triton IR inside
    the shard_map, with the state all-reduce, on the host."""
    pytest.importorskip("jax._src.pallas.triton.lowering")
    from sana_jax.nn.rope import rope_3d

    m = mesh(context=2)
    cos, sin = rope_3d((2, 22, 40), 112)
    x = jax.ShapeDtypeStruct((1, 2 * 880, 20, 112), jnp.bfloat16)
    fn = functools.partial(sharded_linear_attention_pallas, mesh=m, layout=plan(m, x.shape), interpret=False,
                           return_states=True)
    text = cuda_lowering(fn, x, x, x, cos, sin)
    assert text.count("xla.gpu.triton") == 2 and "all_reduce" in text

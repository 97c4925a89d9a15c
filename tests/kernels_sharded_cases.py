"""Run in its own process with 8 fake CPU devices (tests/test_kernels_sharded.py starts it): the linear-attention
kernel (Pallas interpret mode) inside sharded programs against the XLA reference on one device, and what the
compiled HLO holds. Prints one JSON object."""

from __future__ import annotations

import functools
import json
import os
import re
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

from sana_jax.kernels.dispatch import force_impl, linear_attention, linear_attention_mesh  # noqa: E402
from sana_jax.kernels.sharded import SCOPE  # noqa: E402
from sana_jax.nn.linear_attention import accumulate_state  # noqa: E402
from sana_jax.nn.rope import rope_3d  # noqa: E402
from sana_jax.parallel import make_mesh  # noqa: E402

GRID = (8, 2, 3)  # 48 tokens: 6 per device on context=8, 12 on context=4
B, HEADS, D = 2, 4, 12
KERNEL = {"block_state": 16, "block_out": 16}
#: chunk-causal case: on context=8 (6 tokens per device) the first boundary (token 20) falls inside device 3
CHUNKS, WINDOW = (20, 16, 12), 1
GRAD = "grad_rel"
#: what case_ops runs per mesh (each variant is one more compile: the file's budget is ~40 s of CPU)
OPS = {"context=8": ("non_causal", "chunked", GRAD), "tensor=2,context=4": ("stream",)}


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def hlo_facts(hlo: str) -> dict:
    """The linear attention's collectives (ops under the sharded call's named scope), all-gathers of anything, and
    whether the kernels run inside the shard_map."""
    lines = [ln for ln in hlo.splitlines() if "=" in ln]
    ours = [ln for ln in lines if f"{SCOPE}/shard_map" in ln]
    return {"attention_all_reduces": sum(1 for ln in ours if re.search(r" all-reduce(-start)?\(", ln)),
            "attention_all_reduces_in_loop": sum(1 for ln in ours if re.search(r" all-reduce(-start)?\(", ln)
                                                 and "while/body" in ln),
            "all_gathers": sum(1 for ln in lines if re.search(r" all-gather(-start)?\(", ln)),
            "state_kernel": sum(1 for ln in ours if f"{SCOPE}/shard_map/sana_linear_attention_state/" in ln),
            "output_kernel": sum(1 for ln in ours if f"{SCOPE}/shard_map/sana_linear_attention_output/" in ln)}


@functools.cache
def _ops_inputs():
    cos, sin = rope_3d(GRID, D)
    n = int(np.prod(GRID))
    q, k, v, q2, v2 = (jax.random.normal(key, (B, n, HEADS, D)) for key in jax.random.split(jax.random.key(0), 5))
    return q, k, v, cos, sin, accumulate_state(q2, v2, cos, sin)  # a carried-in (streaming) state


def _attention(mesh, impl, variant):
    def fn(q, k, v, cos, sin, past):
        kw = {"non_causal": {}, "stream": {"initial_state": past, "return_states": True},
              "chunked": {"causal_chunk": CHUNKS, "window": WINDOW, "initial_state": past,
                          "return_states": True}}[variant]
        with linear_attention_mesh(mesh):
            return linear_attention(q, k, v, cos, sin, impl=impl, **kw, **KERNEL)
    return jax.jit(fn)


def case_ops(spec: str) -> dict:
    """The dispatcher on a mesh (interpret) against the reference on one device: ``variants`` of
    :func:`_attention`, and (``grad``) the gradient of the non-causal attention with a carried-in state."""
    args = _ops_inputs()
    mesh = make_mesh(spec)
    out = {}
    for variant in (v for v in OPS[spec] if v != GRAD):
        want = _attention(None, "reference", variant)(*args)
        compiled = _attention(mesh, "interpret", variant).lower(*args).compile()
        got = compiled(*args)
        out[variant] = {"rel": max(rel(a, b) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want),
                                                             strict=True)),
                        **hlo_facts(compiled.as_text())}
    if GRAD in OPS[spec]:  # differentiable: the reference's backward, partitioned by XLA
        def grads(mesh, impl):
            def loss(q, k, v, cos, sin, past):
                with linear_attention_mesh(mesh):
                    o = linear_attention(q, k, v, cos, sin, impl=impl, initial_state=past, **KERNEL)
                return jnp.sum(o ** 2)
            return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*args)
        out[GRAD] = max(rel(a, b) for a, b in zip(grads(mesh, "interpret"), grads(None, "reference")))
    return out


@functools.cache
def _dit_setup():
    """The tiny DiT of tests/parallel_cases.py, its inputs and its one-device (XLA) output, once for all meshes."""
    from tests.parallel_cases import inputs, tiny_dit

    model = tiny_dit()
    args = inputs()
    return model, args, np.asarray(model(*args))


def case_dit(spec: str) -> dict:
    """The tiny DiT through ``sharded_forward`` with the kernel (interpret) against one device (XLA)."""
    from sana_jax.parallel.dit import sharded_forward

    model, args, want = _dit_setup()
    fwd, params = sharded_forward(model, make_mesh(spec))
    with force_impl("interpret"):
        compiled = fwd.lower(params, *args).compile()
    got = compiled(params, *args)
    return {"rel": rel(got, want), "layers": model.config.num_layers, **hlo_facts(compiled.as_text())}


def case_stream(spec: str) -> dict:
    """The block-causal model's streaming step with the kernel on a mesh (interpret) against the reference step on
    one device: a chunk committed against a non-empty past (one chunk of 4 frames + the carried state, the chunk's
    own state returned)."""
    from sana_jax.models import sana_video_causal as sc
    from tests.helpers import tiny_causal_model

    model = tiny_causal_model()
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 8, 4, 4, 4)), jnp.float32)  # two chunks of 4 frames, 4 tokens each
    text = jnp.asarray(rng.standard_normal((2, 5, 8)), jnp.float32)
    mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    ref, ker = sc.StreamingDiT(model, donate=False), sc.StreamingDiT(model, donate=False)  # one trace each
    _, past = ref(ref.init_state(text, mask, height=4, width=4), x[:, :4], 0.0, commit=True)
    want = ref(past, x[:, 4:], 0.0, commit=True)
    with linear_attention_mesh(make_mesh(spec)), force_impl("interpret"):
        got = ker(past, x[:, 4:], 0.0, commit=True)
    return {"rel": max(rel(a, b) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)))}


CASES = {"ops": case_ops, "dit": case_dit, "stream": case_stream}

if __name__ == "__main__":  # argv: kind:mesh ...
    print(json.dumps({item: CASES[item.split(":")[0]](item.split(":")[1]) for item in sys.argv[1:]}))

"""Logical-axis rules: every parameter carries ``logical_axes`` metadata (``("embed", "mlp")`` …, see
``sana_jax.nn.layers``); a rule table maps those names to mesh axes, which gives each parameter its
``PartitionSpec`` without any per-model code. A dimension whose size the mesh axis does not divide is replicated
(never an uneven shard), and a mesh axis is used at most once per parameter.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

#: inference: replicate weights except tensor-parallel heads / MLP (a no-op when the tensor axis has size 1).
INFERENCE_RULES: dict[str, str | None] = {
    "layers": None, "embed": None, "heads": "tensor", "kv_heads": "tensor", "mlp": "tensor", "vocab": None,
    "conv_out": None,
}
#: training with FSDP: additionally shard the model width over ``fsdp``.
FSDP_RULES: dict[str, str | None] = {**INFERENCE_RULES, "embed": "fsdp", "vocab": "fsdp"}


def spec_for(axes: tuple[str | None, ...] | None, shape: tuple[int, ...], mesh: Mesh,
             rules: Mapping[str, str | None]) -> PartitionSpec:
    if not axes or len(axes) != len(shape):
        return PartitionSpec()
    used, out = set(), []
    for name, size in zip(axes, shape):
        axis = rules.get(name) if name else None
        if axis is None or axis in used or mesh.shape[axis] == 1 or size % mesh.shape[axis]:
            out.append(None)
        else:
            out.append(axis)
            used.add(axis)
    return PartitionSpec(*out)


def param_shardings(model_or_state, mesh: Mesh, rules: Mapping[str, str | None] = INFERENCE_RULES):
    """A pytree of ``NamedSharding`` matching ``nnx.state(model)`` (variables without logical axes replicate)."""
    state = model_or_state if isinstance(model_or_state, nnx.State) else nnx.state(model_or_state)

    def one(var):  # same Variable type and metadata, a NamedSharding as its value: the trees line up
        spec = spec_for(var.get_metadata().get("logical_axes"), tuple(var.get_value().shape), mesh, rules)
        return var.replace(NamedSharding(mesh, spec))

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def shard_state(state: nnx.State, mesh: Mesh, rules: Mapping[str, str | None] = INFERENCE_RULES) -> nnx.State:
    """Place every variable of ``state`` on ``mesh`` per ``rules`` (each device receives only its shard)."""
    shardings = param_shardings(state, mesh, rules)
    return jax.tree.map(lambda v, s: jax.device_put(v, s), state, shardings)

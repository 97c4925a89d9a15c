"""A model's parameters as a flat dict of named arrays, and back: the form training states keep them in.

Names are the model's parameter paths (``"blocks.attn1.to_q.kernel"``). :class:`ParamTree` holds a private copy
of the model's structure (set to compute in the training dtype, with rematerialisation as asked), the initial
values, and — given a mesh — each parameter's FSDP sharding. Shared by the flow-matching trainer and the
distillation trainer, which keep three models this way.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def _name(path) -> str:
    keys = [getattr(k, "key", getattr(k, "name", None)) for k in path]
    return ".".join(str(k) for k in keys if k != "value")


def set_compute(model: nnx.Module, dtype, remat: bool | None = None) -> None:
    """Set the activation dtype of every layer (parameters keep their dtype) and, for models that scan blocks,
    rematerialisation. Both are static graph attributes, so this changes what the next trace computes."""
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Module):
            if hasattr(node, "dtype") and not isinstance(getattr(node, "dtype"), nnx.Variable):
                node.dtype = jnp.dtype(dtype)
            if remat is not None and hasattr(node, "remat"):
                node.remat = remat


class ParamTree:
    """``model``'s structure and named initial values; ``model`` itself is untouched (a copy is set to compute in
    ``compute_dtype``). ``mesh``: shard every parameter by the FSDP logical-axis rules."""

    def __init__(self, model: nnx.Module, compute_dtype="float32", remat: bool | None = None, *, mesh=None):
        config_of = getattr(getattr(model, "config", None), "to_diffusers", None)
        self.model_config = config_of() if config_of else type(model).__name__
        model = nnx.merge(*nnx.split(model))  # a copy of the structure (same arrays)
        set_compute(model, compute_dtype, remat)
        self.graphdef, state = nnx.split(model)
        leaves, self.treedef = jax.tree_util.tree_flatten_with_path(state)
        self.names = [_name(p) for p, _ in leaves]
        self.initial = {n: v for n, (_, v) in zip(self.names, leaves)}
        self.mesh = mesh
        self.shardings = self._shardings(state) if mesh is not None else None

    def _shardings(self, state) -> dict:
        from sana_jax.parallel.rules import FSDP_RULES, param_shardings

        shardings = jax.tree_util.tree_leaves(param_shardings(state, self.mesh, FSDP_RULES),
                                              is_leaf=lambda x: isinstance(x, nnx.Variable))
        return {n: s.get_value() for n, s in zip(self.names, shardings)}

    def place(self, name: str, value) -> jax.Array:
        return jnp.asarray(value) if self.shardings is None else to_global(value, self.shardings[name])

    def initial_copy(self, names=None, dtype=None) -> dict:
        """Fresh, placed copies of the initial values of ``names`` (default all), cast to ``dtype`` if given
        (copies: train steps donate their state, and the initial values must survive)."""
        names = self.names if names is None else names
        return {n: self.place(n, jnp.array(self.initial[n], dtype, copy=True)) for n in names}

    def abstract(self, names=None, dtype=None) -> dict:
        """``jax.ShapeDtypeStruct`` s of the initial values of ``names`` (default all), as :meth:`initial_copy`
        gives them (without their shardings)."""
        names = self.names if names is None else names
        return {n: jax.ShapeDtypeStruct(jnp.shape(self.initial[n]), jnp.dtype(dtype or self.initial[n].dtype))
                for n in names}

    def merge(self, *weights: dict) -> nnx.Module:
        """The model with each parameter taken from the first of ``weights`` that names it."""
        def pick(n):
            for w in weights:
                if n in w:
                    return w[n]
            raise KeyError(n)

        leaves = [pick(n) for n in self.names]
        return nnx.merge(self.graphdef, jax.tree_util.tree_unflatten(self.treedef, leaves))

    def count(self, names=None) -> int:
        names = self.names if names is None else names
        return sum(int(jnp.size(self.initial[n])) for n in names)


def to_global(value, sharding) -> jax.Array:
    """``value`` (the same on every process) placed with ``sharding``. On a mesh spanning several processes each
    process builds its own shards from its copy (``jax.make_array_from_callback``): no transfer between hosts, and
    none of the cross-process equality check that ``jax.device_put`` makes of a host value."""
    if sharding.is_fully_addressable:
        return jax.device_put(jnp.asarray(value), sharding)
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def state_shardings(mesh, abstract_state: dict, trees: dict) -> dict:
    """The sharding of every leaf of a training state: a leaf under the top-level key ``k`` whose path ends in a
    parameter name of ``trees[k]`` (the weights, their EMA, the optimiser's moments) takes that parameter's
    sharding; every other leaf (the step, optimiser counts) is replicated. Placing a state this way and keeping it
    so (``jax.jit(..., out_shardings=...)``) makes a restored or stepped state look exactly like a fresh one, so the
    train step compiles once."""
    from jax.sharding import NamedSharding, PartitionSpec

    replicated = NamedSharding(mesh, PartitionSpec())

    def one(path, leaf):
        tree = trees.get(getattr(path[0], "key", None))
        name = getattr(path[-1], "key", None)
        if tree is not None and tree.shardings is not None and name in tree.shardings \
                and tuple(leaf.shape) == tuple(jnp.shape(tree.initial[name])):
            return tree.shardings[name]
        return replicated

    return jax.tree_util.tree_map_with_path(one, abstract_state)


def place_batch(mesh, batch: dict, *, replicated=()) -> dict:
    """A batch of host arrays (the same on every process) on ``mesh`` (None: the default device): the leading axis
    split over the ``data`` and ``fsdp`` axes, the entries named in ``replicated`` (shared by every sample) on every
    device."""
    if mesh is None:
        return {k: jnp.asarray(v) for k, v in batch.items()}
    from jax.sharding import NamedSharding, PartitionSpec

    axes = tuple(a for a in ("data", "fsdp") if a in mesh.shape and mesh.shape[a] > 1) or None
    return {k: to_global(v, NamedSharding(mesh, PartitionSpec() if k in replicated else PartitionSpec(axes)))
            for k, v in batch.items()}


def gathered(weights: dict) -> dict:
    """Named arrays as arrays of this process's default device, gathered first where they span several processes
    (:func:`sana_jax.parallel.multihost.to_host`; every process must call this): what an export writes."""
    from sana_jax.parallel.multihost import to_host

    return {n: v if not isinstance(v, jax.Array) or v.is_fully_addressable else jnp.asarray(to_host(v))
            for n, v in weights.items()}

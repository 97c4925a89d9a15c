"""Between NNX modules and flat ``"a.b.c" -> array`` dicts: abstract targets for loaders, merge after loading."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import numpy as np
from flax import nnx


def flatten(tree: Mapping, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def unflatten(flat: Mapping[str, object]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(int(p) if p.isdigit() else p, {})
        node[int(leaf) if leaf.isdigit() else leaf] = value
    return tree


def abstract_model(make: Callable[[], nnx.Module]):
    """``(graphdef, abstract_state, targets)`` with ``targets``: flat path → (shape, dtype), allocating nothing."""
    abstract = nnx.eval_shape(make)
    graphdef, state = nnx.split(abstract)
    targets = {p: (tuple(v.shape), np.dtype(v.dtype)) for p, v in flatten(nnx.to_pure_dict(state)).items()}
    return graphdef, state, targets


def merge(graphdef, abstract_state, flat: Mapping[str, object]) -> nnx.Module:
    """Build the module from an abstract state and a flat dict of concrete arrays."""
    nnx.replace_by_pure_dict(abstract_state, unflatten(flat))
    return nnx.merge(graphdef, abstract_state)


def flat_params(model: nnx.Module) -> dict[str, jax.Array]:
    """The model's parameters as a flat ``path -> array`` dict."""
    return flatten(nnx.to_pure_dict(nnx.state(model, nnx.Param)))

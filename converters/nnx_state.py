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
    """``(graphdef, abstract_state, targets)`` with ``targets``: flat path → (shape, dtype), allocating nothing.
    Inside ``converters.quantized.storing("fp8" | "int8")`` every dense kernel has 8-bit storage
    (``sana_jax.nn.layers.quantize_weights``)."""
    from converters.quantized import storage_format
    from sana_jax.nn.layers import quantize_weights

    abstract = nnx.eval_shape(make)
    if storage_format() is not None:
        quantize_weights(abstract, storage_format())
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


def random_model(family, config, *, seed: int = 0, dtype=np.float32) -> nnx.Module:
    """A model of a converter ``family`` (``converters.FAMILIES``) with random weights drawn in NumPy on the abstract
    shapes, for benchmarks and tests (no eager initialisers: building a Wan VAE op by op takes half a minute on two
    CPU cores, a full-size DiT far longer). Matrices and kernels N(0, 1/fan_in), modulation tables N(0, 1/D), 1-D
    weights 1 + N(0, 0.1²), biases N(0, 0.1²); stacked layers (``blocks.``, ``layers.``) count per layer."""
    import jax.numpy as jnp

    graphdef, state, targets = family.abstract(config, jnp.dtype(dtype))
    rng = np.random.default_rng(seed)
    flat = {}
    for path, (shape, _) in targets.items():
        own = shape[1:] if path.split(".")[0] in ("blocks", "layers") else shape
        value = rng.standard_normal(shape, dtype=np.float32)
        if "scale_shift_table" in path:
            value /= np.sqrt(own[-1])
        elif len(own) >= 2:
            value /= np.sqrt(np.prod(own[:-1]))
        else:
            value = (1.0 if path.endswith(("weight", "gamma", "scale")) else 0.0) + 0.1 * value
        flat[path] = jnp.asarray(value, dtype)
    return merge(graphdef, state, flat)

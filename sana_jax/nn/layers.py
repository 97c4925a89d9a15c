"""Basic parameterised layers carrying logical axis names.

Every parameter is an ``nnx.Param`` with a ``logical_axes`` metadata tuple (one name per dimension, e.g.
``("embed", "mlp")``); ``sana_jax.parallel`` maps those names to mesh axes by rules alone. ``logical_axes`` is
used rather than flax's ``out_sharding`` because the latter shards eagerly and then cannot be built without a mesh.
Blocks stacked for ``scan`` (:func:`stacked`) get a leading ``"layers"`` axis through :func:`prepend_logical_axis`.

8-bit weights (``converters.load(…, weights="fp8" | "int8")``): :func:`quantize_weights` gives every dense kernel
of an abstract model (each :class:`Linear`'s ``kernel``; the parameters a module lists in its ``EIGHT_BIT``, such as
the SANA-Video FFN's temporal conv) 8-bit storage and a float32 per-output-channel ``<name>_scale``; the true kernel,
:func:`dequantize` ``(kernel, scale)``, is formed inside the jitted computation, so the weights stay 8-bit in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

Initializer = Callable[..., jax.Array]
DType = jnp.dtype | type

#: 8-bit storage formats of :class:`Linear` kernels: name → (stored dtype, largest magnitude it holds)
WEIGHT_FORMATS = {"fp8": (jnp.float8_e4m3fn, 448.0), "int8": (jnp.int8, 127.0)}


def param(rngs: nnx.Rngs | None, init: Initializer, shape: Sequence[int], axes: Sequence[str | None],
          dtype: DType) -> nnx.Param:
    """A parameter of ``shape`` initialised by ``init`` and tagged with its logical ``axes``."""
    if len(axes) != len(shape):
        raise ValueError(f"logical axes {axes} do not match shape {shape}")
    key = rngs.params() if rngs is not None else jax.random.key(0)
    return nnx.Param(init(key, tuple(shape), dtype), logical_axes=tuple(axes))


def prepend_logical_axis(module: nnx.Module, name: str) -> None:
    """Prefix the logical axes of every parameter of ``module`` (made by ``nnx.vmap``) with ``name``."""
    for _, var in nnx.iter_graph(module):
        if isinstance(var, nnx.Variable) and "logical_axes" in var.get_metadata():
            var.set_metadata(logical_axes=(name, *var.get_metadata()["logical_axes"]))


def stacked(count: int, build: Callable[[nnx.Rngs], nnx.Module], rngs: nnx.Rngs) -> nnx.Module:
    """``count`` identical modules ``build(rngs)`` as one module whose parameters have a leading ``layers`` axis
    (``nnx.vmap`` over split keys), for a ``lax.scan`` over depth: compile time does not grow with it."""

    @nnx.split_rngs(splits=count)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def make(r: nnx.Rngs) -> nnx.Module:
        return build(r)

    layers = make(rngs)
    prepend_logical_axis(layers, "layers")
    return layers


def dequantize(kernel: jax.Array, scale: jax.Array | None) -> jax.Array:
    """An 8-bit ``kernel`` (…, *K, out) times its per-output-channel ``scale`` (…, out), in float32 (``kernel``
    itself when ``scale`` is None: full-precision storage)."""
    if scale is None:
        return kernel
    return kernel.astype(jnp.float32) * scale.reshape(scale.shape[:-1] + (1,) * (kernel.ndim - scale.ndim)
                                                      + scale.shape[-1:])


def scale_of(module: nnx.Module, name: str) -> jax.Array | None:
    """The value of ``module``'s ``<name>_scale`` (None without 8-bit storage)."""
    scale = getattr(module, name + "_scale", None)
    return None if scale is None else scale[...]


class Linear(nnx.Module):
    """``y = x @ kernel + bias`` with ``kernel`` of shape (in, out) (the transpose of torch's ``weight``); with 8-bit
    storage (:func:`quantize_weights`) ``y = x @ (kernel · kernel_scale) + bias``, ``kernel_scale`` of shape (out,)."""

    EIGHT_BIT = {"kernel": 2}  # the parameters 8-bit storage applies to, with their kernel rank (…, in, out)

    def __init__(self, in_features: int, out_features: int, *, axes: tuple[str | None, str | None],
                 use_bias: bool = True, dtype: DType = jnp.float32, param_dtype: DType = jnp.float32,
                 kernel_init: Initializer | None = None, rngs: nnx.Rngs):
        self.dtype = dtype
        init = kernel_init or nnx.initializers.lecun_normal()
        self.kernel = param(rngs, init, (in_features, out_features), axes, param_dtype)
        self.bias = (param(rngs, nnx.initializers.zeros, (out_features,), axes[1:], param_dtype)
                     if use_bias else nnx.data(None))
        self.kernel_scale = nnx.data(None)

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = dequantize(self.kernel[...], scale_of(self, "kernel"))  # (8-bit: within the jitted matmul)
        y = jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


def quantize_weights(module: nnx.Module, weights: str) -> nnx.Module:
    """Every parameter ``name`` that a module of the abstract ``module`` (``nnx.eval_shape``) lists in its
    ``EIGHT_BIT`` (``{name: kernel rank}``: every :class:`Linear`'s ``kernel``) stored 8-bit (``weights``: a key of
    :data:`WEIGHT_FORMATS`), beside a float32 ``<name>_scale`` of shape (…, out), one scale per output channel,
    carrying the kernel's logical axes (a stacked layer's ``layers`` axis included); what a loader then fills
    (``converters.quantized``)."""
    dtype = WEIGHT_FORMATS[weights][0]
    for node in [node for _, node in nnx.iter_graph(module) if hasattr(node, "EIGHT_BIT")]:
        for name, rank in node.EIGHT_BIT.items():
            kernel = getattr(node, name)
            shape, axes = tuple(kernel.get_value().shape), kernel.get_metadata()["logical_axes"]
            setattr(node, name, nnx.Param(jax.ShapeDtypeStruct(shape, dtype), logical_axes=axes))
            setattr(node, name + "_scale", nnx.Param(jax.ShapeDtypeStruct(shape[:-rank] + shape[-1:], jnp.float32),
                                                     logical_axes=axes[:-rank] + axes[-1:]))
    return module


class RMSNorm(nnx.Module):
    """RMSNorm over the last axis with a learned ``weight`` (diffusers ``RMSNorm``, elementwise_affine=True).

    The statistic is taken in float32; the result is cast back to the input dtype.
    """

    def __init__(self, dim: int, *, eps: float, axis_name: str | None = "embed",
                 param_dtype: DType = jnp.float32, rngs: nnx.Rngs | None = None):
        self.eps = eps
        self.weight = param(rngs, nnx.initializers.ones, (dim,), (axis_name,), param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        return (y * self.weight[...].astype(jnp.float32)).astype(x.dtype)


def layer_norm(x: jax.Array, eps: float) -> jax.Array:
    """LayerNorm over the last axis without affine parameters, statistics in float32."""
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """adaLN modulation ``x * (1 + scale) + shift`` (Sana's ``t2i_modulate``)."""
    return x * (1 + scale) + shift

"""8-bit checkpoints: fp8 / int8 weights beside their scales, read for every family, and 8-bit weights in memory.

**Reading** (:func:`dequantized`, which :func:`converters.loader.open_checkpoint` applies to every checkpoint). A
scaled 8-bit weight is stored as ``weight`` (``float8_e4m3fn``, ``float8_e5m2`` or ``int8``, torch layout) beside a
float32 ``weight_scale`` (ltx-core's spelling, e.g. ``ltx-2-19b-dev-fp8``) or ``scale_weight`` (ComfyUI's, e.g.
``umt5_xxl_fp8_e4m3fn_scaled``), per tensor (0-d or one element) or per output channel (``(out,)`` or
``(out, 1, …)``); the true weight is ``weight.astype(float32) · weight_scale``. An ``input_scale`` / ``scale_input``
(the activation scale of a static fp8 × fp8 matmul) is accepted and not used: activations stay in the compute dtype.
ComfyUI's ``scaled_fp8`` marker tensor and its ``.comfy_quant`` layer declarations are consumed too. The view
presents every weight dequantised (float32; the rest untouched) under its own name, the companions hidden, and
``dtype()`` of a scaled weight is the file's other floats' (bf16 in the releases: the default compute dtype). Some
files mix bf16 blocks in (ltx-core leaves the first and last blocks and the projections in bf16); an fp8 file with
no scale at all (ltx-core's ``fp8_cast``, ComfyUI's plain ``*_fp8_e4m3fn``) holds the weights themselves. Refused,
naming the tensor: a scale without its weight, two scales for one weight, a scale whose shape fits neither a tensor
nor its output channels (block scales), an 8-bit weight without a scale in a file that scales its others (or any
int8 weight without one), a ComfyUI layer format other than fp8 / int8 tensor-wise.

**Storing** (``converters.load(…, weights="fp8" | "int8")``): the abstract model's dense kernels (every Linear's,
and SANA-Video's temporal conv) get 8-bit storage and a per-output-channel float32 ``<name>_scale``
(:func:`sana_jax.nn.layers.quantize_weights`, applied by ``converters.nnx_state.abstract_model`` inside
:func:`storing`), and :func:`load_kernel` fills them while the weights stream in, one layer at a time: ``scale =
max |w| over the inputs (and taps) / (448 | 127)``, ``kernel = w / scale`` (rounded, clipped). A weight already
stored in that format keeps its file scale, so its bytes are unchanged (an fp8 release loaded with
``weights="fp8"`` holds exactly the file's fp8 values; exported, it writes them back). On a mesh each block is read
and quantised alone; a scale the file lacks needs each output channel's whole column, read one layer at a time
(more than the shard when the input axis is sharded: converting once with ``sana-jax convert --weights int8``
avoids it).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
from collections.abc import Iterator, Mapping

import ml_dtypes
import numpy as np

from converters import tables
from sana_jax.errors import CheckpointError, InputError
from sana_jax.nn.layers import WEIGHT_FORMATS

WEIGHT_SCALES = (".weight_scale", ".scale_weight")
INPUT_SCALES = (".input_scale", ".scale_input")
MARKER = "scaled_fp8"  # ComfyUI's legacy marker (its dtype names the fp8 format)
DECLARATION = ".comfy_quant"  # ComfyUI's per-layer JSON declaration (a uint8 tensor)
COMFY_FORMATS = ("float8_e4m3fn", "float8_e5m2", "int8_tensorwise")
EIGHT_BIT = (np.dtype(ml_dtypes.float8_e4m3fn), np.dtype(ml_dtypes.float8_e5m2), np.dtype(np.int8))
SCALE = "_scale"  # a quantised kernel ``X.kernel``'s scale is ``X.kernel_scale`` (``X.conv_temp``: ``…_scale``)


def _stored_dtype(source: Mapping, name: str) -> np.dtype:
    dtype = getattr(source, "dtype", None)
    return np.dtype(dtype(name) if callable(dtype) else np.asarray(source[name]).dtype)


def _is_float(dtype: np.dtype) -> bool:
    return dtype.kind == "f" or dtype.name == "bfloat16"


def _fit_scale(scale: np.ndarray, weight_shape: tuple[int, ...], where: str) -> np.ndarray:
    """``scale`` as float32 broadcastable to the weight: 0-d (per tensor) or of the weight's rank."""
    scale = np.asarray(scale, np.float32)
    if scale.size == 1:
        return scale.reshape(())
    if scale.ndim == 1 and weight_shape and scale.shape[0] == weight_shape[0]:  # (out,): per output channel
        return scale.reshape(scale.shape + (1,) * (len(weight_shape) - 1))
    if scale.ndim == len(weight_shape) and all(s in (1, w) for s, w in zip(scale.shape, weight_shape)):
        return scale
    raise CheckpointError(f"{where}: scale of shape {scale.shape} fits neither the whole weight {weight_shape} nor "
                          "its output channels (block-wise scales are not supported)")


class DequantizedSource(Mapping):
    """A checkpoint mapping with its scaled 8-bit weights presented dequantised (module docstring); also
    ``quantization(name)``: the stored dtype and scale of a scaled weight (for :func:`load_kernel`), else None."""

    def __init__(self, source: Mapping, where: str):
        self.source, self.where = source, where
        self.metadata = getattr(source, "metadata", {}) or {}
        self._scale_names: dict[str, str] = {}
        self._scales: dict[str, np.ndarray] = {}
        companions, problems = set(), []
        for name in source:
            suffix = next((s for s in WEIGHT_SCALES + INPUT_SCALES if name.endswith(s)), None)
            if suffix is not None:
                companions.add(name)
                weight = name[:-len(suffix)] + ".weight"
                if weight not in source:
                    problems.append(f"{name}: a scale without its weight {weight!r}")
                elif suffix in WEIGHT_SCALES:
                    if weight in self._scale_names:
                        problems.append(f"{weight}: two scales, {self._scale_names[weight]} and {name}")
                    self._scale_names[weight] = name
            elif name == MARKER or name.endswith("." + MARKER):
                companions.add(name)
            elif name.endswith(DECLARATION):
                companions.add(name)
                problems += self._check_declaration(name)
        scaled = bool(self._scale_names)
        for name in source:
            if name in companions or name in self._scale_names or not name.endswith(".weight"):
                continue
            dtype = _stored_dtype(source, name)
            if dtype in EIGHT_BIT and (scaled or dtype == np.int8):
                problems.append(f"{name}: a {dtype.name} weight without its weight_scale"
                                + (" (the file scales its other 8-bit weights)" if scaled else ""))
        if problems:
            more = f" … and {len(problems) - 8} more" if len(problems) > 8 else ""
            raise CheckpointError(f"{where}: " + "; ".join(problems[:8]) + more)
        for weight, scale_name in self._scale_names.items():  # shapes checked now, values read on first use
            _fit_scale(np.empty(tables._shape_of(source, scale_name), np.float32), self.shape(weight),
                       f"{where}: {scale_name}")
        self._keys = [n for n in source if n not in companions]
        self._key_set = set(self._keys)
        floats = [d for d in (_stored_dtype(source, n) for n in self._keys) if _is_float(d) and d not in EIGHT_BIT]
        #: what a scaled weight is presented as: the file's most common other float dtype (float32 if none)
        self.compute_dtype = max(set(floats), key=floats.count) if floats else np.dtype(np.float32)

    def _check_declaration(self, name: str) -> list[str]:
        try:
            fmt = json.loads(np.asarray(self.source[name]).tobytes().decode()).get("format")
        except (ValueError, AttributeError) as e:
            return [f"{name}: unreadable ComfyUI layer declaration ({e})"]
        if fmt not in COMFY_FORMATS:
            return [f"{name}: ComfyUI layer format {fmt!r} is not supported (only {', '.join(COMFY_FORMATS)})"]
        return []

    def scale(self, name: str) -> np.ndarray:
        """The float32 scale of weight ``name``, 0-d or broadcastable to it in the file's layout."""
        if name not in self._scales:
            scale_name = self._scale_names[name]
            scale = tables.check_finite_tensor(np.asarray(self.source[scale_name]), scale_name)
            self._scales[name] = _fit_scale(scale, self.shape(name), f"{self.where}: {scale_name}")
        return self._scales[name]

    def quantization(self, name: str) -> tuple[np.dtype, np.ndarray] | None:
        """(stored dtype, scale) of a scaled weight, None for any other tensor."""
        if name not in self._scale_names:
            return None
        return _stored_dtype(self.source, name), self.scale(name)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._key_set:  # (a companion is not ours to hand out)
            raise KeyError(name)
        raw = self.source[name]
        if name in self._scale_names:
            return np.asarray(raw).astype(np.float32) * self.scale(name)
        return np.asarray(raw, np.float32) if _stored_dtype(self.source, name) in EIGHT_BIT else raw

    def read_slice(self, name: str, index: tuple[slice, ...]) -> np.ndarray:
        raw = tables.read_slice(self.source, name, index)
        if name not in self._scale_names:
            return raw.astype(np.float32) if raw.dtype in EIGHT_BIT else raw
        scale = self.scale(name)
        index = tuple(index) + (slice(None),) * (scale.ndim - len(index))
        return raw.astype(np.float32) * scale[tuple(i if n > 1 else slice(None) for i, n in zip(index, scale.shape))]

    def shape(self, name: str) -> tuple[int, ...]:
        return tables._shape_of(self.source, name)

    def dtype(self, name: str) -> np.dtype:
        stored = _stored_dtype(self.source, name)
        return self.compute_dtype if name in self._scale_names or stored in EIGHT_BIT else stored

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def dequantized(source: Mapping, where: str) -> Mapping:
    """``source`` itself, or a :class:`DequantizedSource` over it when it holds 8-bit tensors or scale companions."""
    def companion(name: str) -> bool:
        return (name.endswith(WEIGHT_SCALES + INPUT_SCALES + (DECLARATION,)) or name == MARKER
                or name.endswith("." + MARKER))

    if any(companion(n) or _stored_dtype(source, n) in EIGHT_BIT for n in source):
        return DequantizedSource(source, where)
    return source


# -- 8-bit storage ------------------------------------------------------------------------------------------------

_WEIGHTS: contextvars.ContextVar[str | None] = contextvars.ContextVar("converters_weights", default=None)


def check_weights(weights: str | None) -> str | None:
    if weights is not None and weights not in WEIGHT_FORMATS:
        raise InputError(f"weights={weights!r}: expected one of {', '.join(WEIGHT_FORMATS)} (or None: the compute "
                         "dtype)")
    return weights


@contextlib.contextmanager
def storing(weights: str | None) -> Iterator[None]:
    """Within the block, ``converters.nnx_state.abstract_model`` gives every Linear 8-bit storage (``weights``: a key
    of ``sana_jax.nn.layers.WEIGHT_FORMATS``); ``None`` changes nothing. How ``converters.load(…, weights=)`` reaches
    every family's ``abstract``/``load``."""
    token = _WEIGHTS.set(check_weights(weights))
    try:
        yield
    finally:
        _WEIGHTS.reset(token)


def storage_format() -> str | None:
    """The ``weights`` of the enclosing :func:`storing` block (None outside one)."""
    return _WEIGHTS.get()


def weights_format(model) -> str | None:
    """``"fp8"`` / ``"int8"`` when ``model``'s dense kernels are stored in 8 bits, else None."""
    from flax import nnx

    for _, node in nnx.iter_graph(model):
        for name in getattr(node, "EIGHT_BIT", ()):
            if getattr(node, name + SCALE, None) is not None:
                dtype = np.dtype(getattr(node, name)[...].dtype)
                return next(k for k, (d, _) in WEIGHT_FORMATS.items() if np.dtype(d) == dtype)
    return None


def quantize(w: np.ndarray, dtype: np.dtype, scale: np.ndarray | None = None,
             rank: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """``w`` (…, *K, out) of kernel ``rank`` (2: (in, out); 3: (taps, in, out)), float32 → (``kernel`` in ``dtype``,
    float32 ``scale`` (…, out)) with ``w ≈ kernel · scale``; ``scale`` is computed (``max |w|`` over all but the
    output axis of the kernel / the format's largest value) unless given."""
    dtype = np.dtype(dtype)
    qmax = next(m for d, m in WEIGHT_FORMATS.values() if np.dtype(d) == dtype)
    if scale is None:
        amax = np.max(np.abs(w), axis=tuple(range(-rank, -1)))
        scale = np.where(amax > 0, amax / np.float32(qmax), np.float32(1)).astype(np.float32)
    v = w / scale.reshape(scale.shape[:-1] + (1,) * (rank - 1) + scale.shape[-1:])
    if dtype == np.int8:
        v = np.rint(v)
    return np.clip(v, -qmax, qmax).astype(dtype), scale


def _kept_scale(source: Mapping, name: str, rule: tables.Rule, dtype: np.dtype, out: int) -> np.ndarray | None:
    """The file's scale of checkpoint tensor ``name`` as a JAX-layout (out,) vector, when the tensor is stored in
    ``dtype`` and its scale is constant over all but the output axis (then quantising with it gives back the stored
    values)."""
    info = tables.quantization(source, name)
    if info is None or info[0] != np.dtype(dtype):
        return None
    scale = info[1]
    if scale.ndim == 0:
        return np.full((out,), scale, np.float32)
    scale = rule.transform.to_jax(scale)
    if scale.ndim < 2 or any(n != 1 for n in scale.shape[:-1]):  # a scale per input channel or tap: not ours
        return None
    return np.ascontiguousarray(np.broadcast_to(scale.reshape(-1), (out,)), np.float32)


def load_kernel(source: Mapping, target, scale_shape: tuple[int, ...], *, place=lambda a: a, sharding=None,
                scale_sharding=None) -> tuple[object, object]:
    """The 8-bit kernel of a planned dense kernel ``target`` (JAX layout (…, *K, out), ``tables.plan``) and its
    float32 scale of ``scale_shape`` (…, out), each a global array with ``sharding`` / ``scale_sharding`` (shard by
    shard) or, without, ``place``-d whole (host memory: the 8-bit kernel and one float32 layer)."""
    import dataclasses

    dtype, out = target.dtype, target.shape[-1]
    rank = len(target.shape) - len(scale_shape) + 1  # the kernel's own axes (…, *K, out): 2 for a Linear
    # (where in the kernel, checkpoint name, rule) per checkpoint tensor: the whole kernel (...) or one layer of it
    rows = ([(..., *target.sources[None])] if None in target.sources
            else [(i, *target.sources[i]) for i in range(target.shape[0])])
    kept = {at: _kept_scale(source, name, rule, dtype, out) for at, name, rule in rows}
    if sharding is None:
        kernel, scale = np.empty(target.shape, dtype), np.empty(scale_shape, np.float32)
        for at, name, rule in rows:
            w = np.asarray(rule.transform.to_jax(tables._read(source, name)), np.float32)
            kernel[at], scale[at] = quantize(w, dtype, kept[at], rank)
        return place(kernel), place(scale)
    for at, name, rule in rows:  # scales the file lacks: per output channel over every input
        if kept[at] is None:
            w = np.asarray(rule.transform.to_jax(tables._read(source, name)), np.float32)
            kept[at] = quantize(w, dtype, rank=rank)[1]
    scale = kept[...] if ... in kept else np.stack([kept[i] for i in range(target.shape[0])])
    floats = dataclasses.replace(target, dtype=np.dtype(np.float32))

    def block(index: tuple[slice, ...]) -> np.ndarray:
        return quantize(tables._read_block(source, floats, index), dtype, scale[index[:-rank] + index[-1:]], rank)[0]

    return (tables.sharded_array(target.shape, sharding, block),
            tables.sharded_array(scale.shape, scale_sharding, lambda index: scale[index]))


def export_scale(rule: tables.Rule, scale: np.ndarray, rank: int = 2) -> np.ndarray:
    """A kernel's (out,) scale (kernel ``rank`` as in :func:`quantize`) as the checkpoint's ``weight_scale``: 0-d when
    all equal (a per-tensor scale, as the releases write it), else ``(out,)`` for a torch layout with the outputs
    first."""
    if np.all(scale == scale.flat[0]):
        return np.asarray(scale.flat[0], np.float32)
    torch = rule.transform.to_torch(scale.reshape((1,) * (rank - 1) + (-1,)))
    return np.ascontiguousarray(torch.reshape(-1) if torch.shape[0] == scale.size else torch, np.float32)

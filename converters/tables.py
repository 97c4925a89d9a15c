"""Declarative key tables: checkpoint tensor names ↔ JAX parameter paths, with invertible layout transforms.

A table is a list of :class:`Rule` s such as::

    Rule("transformer_blocks.{i}.attn1.to_q.weight", "blocks.attn1.to_q.kernel", LINEAR)

``{i}`` marks a stacked (scanned) layer: checkpoint tensor ``i`` fills row ``i`` of the JAX parameter's leading
``layers`` axis. Tables run both ways: :func:`load_params` fills a model's parameters from a checkpoint and
:func:`export_tensors` produces checkpoint tensors from parameters; :func:`expected_tensors` lists the checkpoint
names and shapes a model needs (for the full-size ``eval_shape`` checks against the released checkpoints' key lists).

Loading first plans every key from names and shapes alone (safetensors headers, pickle metadata): an unexpected
key, a missing parameter or a shape mismatch raises :class:`CheckpointError` naming all offenders before a single
tensor is read. Then parameters are completed one at a time and handed to ``place`` (e.g. ``jax.device_put``), so
host memory holds one stacked parameter at most besides the memory-mapped files.

**Sharded loading.** Given a ``path -> jax.sharding.Sharding`` map (``load_params(shardings=…)``, or
:func:`sharded_loading` around a family's ``load``, which is how ``converters.load(…, mesh=…)`` reaches every
family), a parameter is instead built shard by shard: for each distinct block of the global array that this
process's devices hold, only that block is read — the JAX index is mapped back through the layout transform
(:meth:`Transform.torch_index`) to a slice of the checkpoint tensor, read with the source's ``read_slice`` (a slice
of the memory-mapped safetensors tensor) — converted, put on the devices that hold it, and dropped. Host memory then
holds one shard at a time, no device ever holds more than its shards, and on several hosts each host reads only its
devices' bytes. Every layout transform here (permute, squeeze, unsqueeze) maps slices to slices; sources without
``read_slice`` are sliced after ``source[name]`` (lazy for memory-mapped arrays; a LoRA-fused tensor is computed
whole, then sliced).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from sana_jax.errors import CheckpointError


@dataclasses.dataclass(frozen=True)
class Transform:
    """An invertible change of layout from a torch tensor to a JAX parameter (permute, then reshape)."""

    name: str
    permute: tuple[int, ...] | None = None
    squeeze: tuple[int, ...] = ()  # torch axes of size 1 dropped before permuting (1×1 convs)
    unsqueeze_jax: tuple[int, ...] = ()  # size-1 axes inserted after permuting (depthwise HWIO's I axis)

    def to_jax(self, a: np.ndarray) -> np.ndarray:
        if self.squeeze:
            a = a.reshape([s for i, s in enumerate(a.shape) if i not in self.squeeze])
        if self.permute:
            a = a.transpose(self.permute)
        for ax in self.unsqueeze_jax:
            a = np.expand_dims(a, ax)
        return a

    def to_torch(self, a: np.ndarray) -> np.ndarray:
        for ax in sorted(self.unsqueeze_jax, reverse=True):
            a = np.squeeze(a, ax)
        if self.permute:
            a = a.transpose(np.argsort(self.permute))
        for ax in sorted(self.squeeze):
            a = np.expand_dims(a, ax)
        return a

    def torch_index(self, index: Sequence[slice]) -> tuple[slice, ...]:
        """The torch-layout index whose :meth:`to_jax` is the JAX-layout block ``index`` (one slice per JAX axis)."""
        idx = list(index)
        for ax in reversed(self.unsqueeze_jax):  # inserted size-1 axes: not in the checkpoint tensor
            del idx[ax]
        if self.permute:
            inverse: list = [None] * len(idx)
            for jax_axis, torch_axis in enumerate(self.permute):
                inverse[torch_axis] = idx[jax_axis]
            idx = inverse
        for ax in sorted(self.squeeze):
            idx.insert(ax, slice(None))
        return tuple(idx)

    def jax_shape(self, torch_shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(self.to_jax(np.empty(torch_shape, np.int8)).shape) if 0 not in torch_shape else ()

    def torch_shape(self, jax_shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(self.to_torch(np.broadcast_to(np.int8(0), jax_shape)).shape)


IDENTITY = Transform("identity")
LINEAR = Transform("linear", permute=(1, 0))  # (out, in) → (in, out)
CONV1X1 = Transform("conv1x1", permute=(1, 0), squeeze=(2, 3))  # (out, in, 1, 1) → (in, out)
CONV3D = Transform("conv3d", permute=(2, 3, 4, 1, 0))  # (O, I, t, h, w) → (t, h, w, I, O)
CONV2D = Transform("conv2d", permute=(2, 3, 1, 0))  # (O, I, h, w) → (h, w, I, O)
DEPTHWISE2D = Transform("depthwise2d", permute=(1, 2, 0), squeeze=(1,), unsqueeze_jax=(2,))  # (C,1,h,w)→(h,w,1,C)
TEMPORAL = Transform("temporal", permute=(2, 1, 0), squeeze=(3,))  # (O, I, k, 1) → (k, I, O)


@dataclasses.dataclass(frozen=True)
class Rule:
    torch: str
    jax: str
    transform: Transform = IDENTITY

    @property
    def stacked(self) -> bool:
        return "{i}" in self.torch

    def pattern(self) -> re.Pattern:
        return re.compile(re.escape(self.torch).replace(re.escape("{i}"), r"(\d+)") + r"\Z")


def _shape_of(source: Mapping, name: str) -> tuple[int, ...]:
    if hasattr(source, "shape"):
        return tuple(source.shape(name))
    return tuple(np.shape(source[name]))


@dataclasses.dataclass
class _Target:
    shape: tuple[int, ...]
    dtype: np.dtype
    sources: dict[int | None, tuple[str, Rule]] = dataclasses.field(default_factory=dict)


def _match(rules: Sequence[Rule], name: str) -> tuple[Rule, int | None] | None:
    hits = []
    for rule in rules:
        m = rule.pattern().match(name)
        if m:
            hits.append((rule, int(m.group(1)) if rule.stacked else None))
    if len(hits) > 1:
        raise CheckpointError(f"key table is ambiguous: {name!r} matches {[h[0].torch for h in hits]}")
    return hits[0] if hits else None


def _fmt(names: Iterable[str], limit: int = 12) -> str:
    names = sorted(names)
    more = f" … and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def plan(rules: Sequence[Rule], targets: Mapping[str, tuple[tuple[int, ...], np.dtype]], source: Mapping,
         where: str, ignore: Callable[[str], bool] = lambda _: False) -> dict[str, _Target]:
    """Map every checkpoint key to a target slice, checking names and shapes only. Raises on any mismatch."""
    plans = {path: _Target(tuple(shape), np.dtype(dtype)) for path, (shape, dtype) in targets.items()}
    unexpected, bad_shapes = [], []
    for name in source:
        if ignore(name):
            continue
        hit = _match(rules, name)
        if hit is None:
            unexpected.append(name)
            continue
        rule, index = hit
        if rule.jax not in plans:
            unexpected.append(f"{name} (this model configuration has no {rule.jax})")
            continue
        target = plans[rule.jax]
        want = target.shape[1:] if rule.stacked else target.shape
        got = rule.transform.jax_shape(_shape_of(source, name))
        if rule.stacked and not 0 <= index < target.shape[0]:
            unexpected.append(f"{name} (layer {index} ≥ {target.shape[0]} layers)")
        elif got != want:
            bad_shapes.append(f"{name}: {_shape_of(source, name)} → {got}, model expects {want} at {rule.jax}")
        else:
            target.sources[index] = (name, rule)
    missing = []
    for path, target in plans.items():
        if not target.sources:
            missing.append(path)
        elif None not in target.sources:
            absent = sorted(set(range(target.shape[0])) - set(target.sources))
            if absent:
                missing.append(f"{path} layers {absent}")
    problems = []
    if bad_shapes:
        problems.append(f"{len(bad_shapes)} shape mismatches: " + "; ".join(bad_shapes[:8]))
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_fmt(unexpected)}")
    if missing:
        problems.append(f"{len(missing)} model parameters not in the checkpoint: {_fmt(missing)}")
    if problems:
        raise CheckpointError(f"{where}: checkpoint does not fit the model — " + " | ".join(problems))
    return plans


_SHARDINGS: contextvars.ContextVar[Mapping | None] = contextvars.ContextVar("converters_shardings", default=None)


@contextlib.contextmanager
def sharded_loading(shardings: Mapping[str, object] | None) -> Iterator[None]:
    """Within the block, :func:`load_params` builds every parameter whose path is in ``shardings`` (flat JAX path →
    ``jax.sharding.Sharding``) shard by shard (module docstring) — how a family loader, whose signature has no
    sharding argument, loads straight onto a mesh. ``None`` changes nothing."""
    token = _SHARDINGS.set(shardings)
    try:
        yield
    finally:
        _SHARDINGS.reset(token)


def load_params(rules: Sequence[Rule], targets: Mapping[str, tuple[tuple[int, ...], np.dtype]], source: Mapping,
                where: str, place: Callable[[str, np.ndarray], object] = lambda _p, a: a,
                ignore: Callable[[str], bool] = lambda _: False, progress=None,
                shardings: Mapping[str, object] | None = None) -> dict[str, object]:
    """Fill every target parameter from ``source``; returns ``path -> place(path, array)``.

    ``targets`` maps JAX paths to (shape, dtype); ``progress`` (a tqdm-like object) is advanced per tensor.
    ``shardings`` (default: the one :func:`sharded_loading` set): a parameter whose path it maps to a sharding
    becomes a global ``jax.Array`` with that sharding, read slice by slice (module docstring); ``place`` is not
    called for it. An 8-bit kernel ``X.kernel`` with its ``X.kernel_scale`` among the targets (8-bit storage,
    ``converters.quantized``) is quantised as it is read; the scale has no checkpoint tensor of its own.
    """
    from converters.quantized import SCALE, load_kernel

    scales = {p: p + SCALE for p in targets if p + SCALE in targets}
    plans = plan(rules, {p: t for p, t in targets.items() if p not in scales.values()}, source, where, ignore)
    shardings = _SHARDINGS.get() if shardings is None else shardings
    out = {}
    for path, target in plans.items():
        sharding = shardings.get(path) if shardings else None
        if path in scales:
            scale = scales[path]
            out[path], out[scale] = load_kernel(
                source, target, tuple(targets[scale][0]), sharding=sharding,
                scale_sharding=shardings.get(scale) if shardings else None, place=lambda a: place(path, a))
        elif sharding is not None:
            out[path] = sharded_array(target.shape, sharding, lambda block: _read_block(source, target, block))
        elif None in target.sources:
            name, rule = target.sources[None]
            out[path] = place(path, np.asarray(rule.transform.to_jax(_read(source, name)), dtype=target.dtype))
        else:
            array = np.empty(target.shape, target.dtype)
            for index, (name, rule) in target.sources.items():
                array[index] = rule.transform.to_jax(_read(source, name))
            out[path] = place(path, array)
            del array
        if progress is not None:
            progress.update(len(target.sources))
    return out


def _read(source: Mapping, name: str) -> np.ndarray:
    try:
        return check_finite_tensor(np.asarray(source[name]), name)
    except CheckpointError:
        raise
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read tensor {name!r}: {e}") from e


_INF_BITS = {"bfloat16": 0x7F80, "float16": 0x7C00}  # the bits of +Inf


def check_finite_tensor(array: np.ndarray, name: str) -> np.ndarray:
    """``array``, or a :class:`CheckpointError` naming tensor ``name`` when it holds NaN or Inf. One fast pass first:
    for 16-bit floats, the largest magnitude's bits (sign cleared) against those of +Inf (IEEE orders magnitudes as
    integers; NaN lies above Inf); for the others a float32 sum, non-finite whenever a value is. Only then are the
    values tested one by one (a sum can also overflow). About 6 GB/s for bfloat16 on one CPU core."""
    if array.dtype.kind != "f" and "float" not in array.dtype.name:  # ints, bools (and bfloat16's kind is "V")
        return array
    inf_bits = _INF_BITS.get(array.dtype.name)
    if inf_bits is not None:
        if array.size == 0 or int(np.max(array.view(np.uint16) & 0x7FFF)) < inf_bits:
            return array
    else:
        with np.errstate(over="ignore"):
            if np.isfinite(np.sum(array, dtype=np.float32)):
                return array
    bad = array.size - int(np.count_nonzero(np.isfinite(array)))
    if bad:
        raise CheckpointError(f"tensor {name!r} holds {bad:,} NaN/Inf values of {array.size:,}: the checkpoint is "
                              "damaged (or was saved from a diverged run)")
    return array


def quantization(source: Mapping, name: str):
    """(stored dtype, scale) of a scaled 8-bit checkpoint tensor (``converters.quantized``), else None."""
    reader = getattr(source, "quantization", None)
    return reader(name) if reader is not None else None


def read_slice(source: Mapping, name: str, index: tuple[slice, ...]) -> np.ndarray:
    """``source[name][index]`` reading only that block where the source can (``source.read_slice``)."""
    try:
        reader = getattr(source, "read_slice", None)
        block = np.asarray(reader(name, index)) if reader is not None else np.asarray(source[name][index])
        return check_finite_tensor(block, name)
    except CheckpointError:
        raise
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read tensor {name!r}[{index}]: {e}") from e


def _read_block(source: Mapping, target: _Target, block: tuple[slice, ...]) -> np.ndarray:
    """The JAX-layout ``block`` of a target parameter, reading only the checkpoint slices it needs."""
    if None in target.sources:
        name, rule = target.sources[None]
        return np.asarray(rule.transform.to_jax(read_slice(source, name, rule.transform.torch_index(block))),
                          dtype=target.dtype)
    layers = range(*block[0].indices(target.shape[0]))
    shape = tuple(len(range(*s.indices(n))) for s, n in zip(block, target.shape))
    out = np.empty(shape, target.dtype)
    for row, i in enumerate(layers):
        name, rule = target.sources[i]
        out[row] = rule.transform.to_jax(read_slice(source, name, rule.transform.torch_index(block[1:])))
    return out


def sharded_array(shape: tuple[int, ...], sharding, read_block: Callable[[tuple[slice, ...]], np.ndarray]):
    """A global ``jax.Array`` of ``shape`` with ``sharding``: each distinct block this process's devices hold is
    ``read_block(index)``, put on those devices, and dropped before the next."""
    import jax

    by_block: dict[tuple, list] = {}
    for device, index in sharding.addressable_devices_indices_map(shape).items():
        key = tuple(s.indices(n)[:2] for s, n in zip(index, shape))
        by_block.setdefault(key, []).append(device)
    arrays = []
    for key, devices in by_block.items():
        block = read_block(tuple(slice(a, b) for a, b in key))
        arrays += [jax.device_put(block, d) for d in devices]
        del block
    return jax.make_array_from_single_device_arrays(shape, sharding, arrays)


def load_module(rules: Sequence[Rule], abstract_fn: Callable, config, source: Mapping, *, where: str, dtype=None,
                dtype_key: str, progress=None):
    """The common loader of every family: dtype (asked for, else the checkpoint's ``dtype_key`` tensor's), the
    abstract module from ``abstract_fn(config, dtype)``, every tensor placed on its device as it is read, merge."""
    import jax
    import jax.numpy as jnp

    from converters.nnx_state import merge

    dtype = jnp.dtype(dtype) if dtype is not None else checkpoint_dtype(source, dtype_key)
    graphdef, state, targets = abstract_fn(config, dtype)
    if progress is not None:
        progress.reset(total=count_tensors(rules, source))
    flat = load_params(rules, targets, source, where, place=lambda _p, a: jax.device_put(a), progress=progress)
    return merge(graphdef, state, flat)


def export_module(rules: Sequence[Rule], model) -> dict[str, np.ndarray]:
    """All of ``model``'s variables (weights and buffers) as checkpoint tensors per ``rules``."""
    from flax import nnx

    from converters.nnx_state import flatten

    state = flatten(nnx.to_pure_dict(nnx.state(model)))
    return export_tensors(rules, {k: np.asarray(v) for k, v in state.items()})


def checkpoint_dtype(source: Mapping, name: str) -> np.dtype:
    """The floating dtype of tensor ``name`` (read from the header where possible), float32 otherwise."""
    dt = source.dtype(name) if hasattr(source, "dtype") and callable(source.dtype) else np.asarray(source[name]).dtype
    return np.dtype(dt) if np.issubdtype(dt, np.floating) or dt.name == "bfloat16" else np.dtype(np.float32)


def count_tensors(rules: Sequence[Rule], source: Mapping, ignore: Callable[[str], bool] = lambda _: False) -> int:
    return sum(1 for n in source if not ignore(n) and _match(rules, n) is not None)


def expected_tensors(rules: Sequence[Rule], targets: Mapping[str, tuple[tuple[int, ...], object]]
                     ) -> dict[str, tuple[int, ...]]:
    """The checkpoint names and torch shapes that a model with these ``targets`` expects (inverse of the table)."""
    by_path: dict[str, list[Rule]] = {}
    for rule in rules:
        by_path.setdefault(rule.jax, []).append(rule)
    out = {}
    for path, (shape, _) in targets.items():
        for rule in by_path.get(path, []):
            if rule.stacked:
                for i in range(shape[0]):
                    out[rule.torch.replace("{i}", str(i))] = rule.transform.torch_shape(shape[1:])
            else:
                out[rule.torch] = rule.transform.torch_shape(shape)
    return out


def export_tensors(rules: Sequence[Rule], params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Checkpoint tensors (torch layout) from flat JAX parameters; every parameter must be covered by a rule. An
    8-bit kernel's ``kernel_scale`` becomes the ``weight_scale`` beside its weight (``converters.quantized``)."""
    from converters.quantized import SCALE, export_scale

    by_path: dict[str, Rule] = {}
    for rule in rules:
        by_path.setdefault(rule.jax, rule)
    scales = {p for p in params if p.endswith(SCALE) and p[:-len(SCALE)] in by_path}
    uncovered = [p for p in params if p not in by_path and p not in scales]
    if uncovered:
        raise CheckpointError(f"no key-table rule exports {_fmt(uncovered)}")
    out = {}
    for path, value in params.items():
        value = np.asarray(value)
        if path in scales:
            rule = by_path[path[:-len(SCALE)]]
            rank = np.ndim(params[path[:-len(SCALE)]]) - value.ndim + 1  # the kernel's own axes, as in quantize
            name, convert = rule.torch + SCALE, lambda v: export_scale(rule, v, rank)
        else:
            rule = by_path[path]
            name, convert = rule.torch, lambda v: np.ascontiguousarray(rule.transform.to_torch(v))
        if rule.stacked:
            for i in range(value.shape[0]):
                out[name.replace("{i}", str(i))] = convert(value[i])
        else:
            out[name] = convert(value)
    return out


@dataclasses.dataclass(frozen=True)
class Rename:
    """A source-layout rename for :class:`RenamedSource`: ``src`` → ``dst``, optionally chunk ``index`` of
    ``parts`` equal chunks along axis 0 (fused projections). ``{i}`` in both names carries a layer index."""

    src: str
    dst: str | None  # None: the key is known and deliberately dropped
    parts: int = 1
    index: int = 0
    prefix: bool = False  # rename every key starting with ``src`` (the rest of the name is kept)


def rename_back(renames: Sequence[Rename], state: Mapping[str, object]) -> dict:
    """A state dict under the names ``renames`` map to (e.g. diffusers') → under their source names (e.g. the
    original layout's): the inverse of :class:`RenamedSource` for one-to-one renames (``{i}`` carried). Names no
    rename produces are kept."""
    patterns = [(re.compile(re.escape(r.dst).replace(re.escape("{i}"), r"(\d+)") + r"\Z"), r)
                for r in renames if r.dst is not None and not r.prefix and r.parts == 1]
    out = {}
    for name, value in state.items():
        for pattern, r in patterns:
            if m := pattern.match(name):
                name = r.src.replace("{i}", m.group(1)) if "{i}" in r.src else r.src
                break
        out[name] = value
    return out


class RenamedSource(Mapping):
    """Presents a checkpoint under another layout's names (e.g. original Sana ``.pth`` → diffusers names).

    Fused tensors (Sana's ``qkv``) are split along axis 0 lazily; dropped keys are reported in ``dropped``.
    Keys that match no rename are passed through unchanged, so the target table reports them as unexpected.
    """

    def __init__(self, source: Mapping, renames: Sequence[Rename], where: str):
        self.source, self.where = source, where
        self._map: dict[str, tuple[str, int, int]] = {}
        self.dropped: list[str] = []
        exact = [(re.compile(re.escape(r.src).replace(re.escape("{i}"), r"(\d+)") + r"\Z"), r)
                 for r in renames if not r.prefix]
        prefixes = sorted((r for r in renames if r.prefix), key=lambda r: -len(r.src))
        for name in source:
            hits = [(m, r) for pattern, r in exact if (m := pattern.match(name))]
            for m, r in hits:  # a fused tensor matches once per chunk
                if r.dst is None:
                    self.dropped.append(name)
                else:
                    dst = r.dst.replace("{i}", m.group(1)) if "{i}" in r.src else r.dst
                    self._add(dst, (name, r.parts, r.index))
            if hits:
                continue
            r = next((r for r in prefixes if name.startswith(r.src)), None)
            if r is not None and r.dst is None:
                self.dropped.append(name)
            else:
                self._add(name if r is None else r.dst + name[len(r.src):], (name, 1, 0))

    def _add(self, dst: str, entry: tuple[str, int, int]) -> None:
        if dst in self._map:
            raise CheckpointError(f"{self.where}: {entry[0]!r} and {self._map[dst][0]!r} both map to {dst!r}")
        self._map[dst] = entry

    def shape(self, name: str) -> tuple[int, ...]:
        src, parts, _ = self._map[name]
        shape = list(_shape_of(self.source, src))
        if parts > 1:
            if shape[0] % parts:
                raise CheckpointError(f"{self.where}: {src} of shape {tuple(shape)} cannot split in {parts}")
            shape[0] //= parts
        return tuple(shape)

    def dtype(self, name: str) -> np.dtype:
        src = self._map[name][0]
        return self.source.dtype(src) if hasattr(self.source, "dtype") else np.asarray(self.source[src]).dtype

    def __getitem__(self, name: str) -> np.ndarray:
        src, parts, index = self._map[name]
        array = self.source[src]
        if parts == 1:
            return array
        n = array.shape[0] // parts
        return array[index * n:(index + 1) * n]

    def quantization(self, name: str):
        src, parts, chunk = self._map[name]
        info = quantization(self.source, src)
        if info is None or parts == 1 or info[1].ndim == 0 or info[1].shape[0] == 1:
            return info
        n = info[1].shape[0] // parts  # a chunk of a fused tensor: its rows of a per-output-channel scale
        return info[0], info[1][chunk * n:(chunk + 1) * n]

    def read_slice(self, name: str, index: tuple[slice, ...]) -> np.ndarray:
        src, parts, chunk = self._map[name]
        if parts > 1:  # a chunk of a fused tensor: shift the axis-0 slice into it
            n = _shape_of(self.source, src)[0] // parts
            start, stop = (index[0] if index else slice(None)).indices(n)[:2]
            index = (slice(chunk * n + start, chunk * n + stop), *index[1:])
        return read_slice(self.source, src, index)

    def __iter__(self):
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)


class Subset(Mapping):
    """Only ``keys`` of ``source``: a native all-in-one file also holds other models' tensors, which are not ours to
    consume (or report)."""

    def __init__(self, source: Mapping, keys):
        self.source, self._keys = source, list(keys)
        self._set = set(self._keys)

    def __getitem__(self, name):
        if name not in self._set:
            raise KeyError(name)
        return self.source[name]

    def shape(self, name):
        return _shape_of(self.source, name)

    def read_slice(self, name, index):
        if name not in self._set:
            raise KeyError(name)
        return read_slice(self.source, name, index)

    def quantization(self, name):
        return quantization(self.source, name)

    def dtype(self, name):
        return self.source.dtype(name) if hasattr(self.source, "dtype") else np.asarray(self.source[name]).dtype

    def __iter__(self):
        return iter(self._keys)

    def __len__(self):
        return len(self._keys)

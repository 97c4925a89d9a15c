"""Read PyTorch ``.pth`` / ``.pt`` zip checkpoints without torch and without executing code.

A torch checkpoint is a zip holding ``<name>/data.pkl`` (a pickle) and one file per storage
(``<name>/data/<key>``). Unpickling normally imports and calls whatever the pickle names, which lets a file run
arbitrary code. Here a restricted unpickler resolves only the names needed to rebuild tensors, ordered dicts and
numpy scalars; any other global (``os.system``, ``builtins.eval``, a model class, ...) raises
:class:`CheckpointError` before anything is called. Tensors come back as :class:`LazyTensor`: nothing is read until
``np.asarray`` is taken, and then the storage is memory-mapped from the zip when it is stored uncompressed (what
``torch.save`` writes), so a checkpoint is converted one tensor at a time.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path

import ml_dtypes
import numpy as np

from sana_jax.errors import CheckpointError

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
    "UntypedStorage": np.uint8,
}


class _StorageType:
    """Stands in for ``torch.FloatStorage`` etc.: only carries the dtype."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Storage:
    """One storage of the archive, read (memory-mapped where possible) on first use."""

    def __init__(self, archive: "_Archive", key: str, dtype: np.dtype, numel: int):
        self.archive, self.key, self.dtype, self.numel = archive, key, dtype, numel
        self._array: np.ndarray | None = None

    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = self.archive.read_storage(self.key, self.dtype, self.numel)
        return self._array


class LazyTensor:
    """A tensor of a torch checkpoint: shape and dtype now, data on ``np.asarray``."""

    def __init__(self, storage: _Storage, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]):
        self.storage, self.offset, self.shape, self.stride = storage, int(offset), tuple(shape), tuple(stride)
        self.dtype = storage.dtype

    def numpy(self) -> np.ndarray:
        flat = self.storage.array()
        if not self.shape:
            return flat[self.offset].copy()
        need = self.offset + 1 + sum((s - 1) * st for s, st in zip(self.shape, self.stride) if s > 0)
        if any(s == 0 for s in self.shape):
            return np.zeros(self.shape, self.dtype)
        if need > flat.size:
            raise CheckpointError(
                f"{self.storage.archive.path}: a tensor of shape {self.shape} reads past its storage "
                f"{self.storage.key} ({flat.size} elements); the checkpoint is corrupt"
            )
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset:], shape=self.shape, strides=tuple(st * item for st in self.stride), writeable=False
        )
        return view

    def __array__(self, dtype=None, copy=None):
        arr = self.numpy()
        return arr if dtype is None else arr.astype(dtype)

    def __repr__(self) -> str:
        return f"LazyTensor(shape={self.shape}, dtype={self.dtype})"


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    return LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *unused):
    return data


def _numpy_scalar(dtype, data=None):
    return np.frombuffer(data, dtype=dtype)[0] if data is not None else dtype.type()


def _codecs_encode(text, encoding="utf-8"):
    # protocol-2 pickles store bytes as _codecs.encode(str, 'latin1'); encoding a string runs no code.
    return text.encode(encoding)


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
    ("_codecs", "encode"): _codecs_encode,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}


class _Archive:
    def __init__(self, path: Path):
        self.path = path
        try:
            self.zip = zipfile.ZipFile(path)
        except zipfile.BadZipFile as e:
            raise CheckpointError(
                f"{path}: not a torch zip checkpoint ({e}); legacy (torch < 1.6) pickles are not supported, "
                "re-save it with a current torch.save"
            ) from e
        pkls = [n for n in self.zip.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkls) != 1:
            raise CheckpointError(f"{path}: expected exactly one data.pkl in the zip, found {len(pkls)}")
        self.prefix = pkls[0][: -len("data.pkl")]
        order = self.prefix + "byteorder"
        if order in self.zip.namelist() and self.zip.read(order).strip() != b"little":
            raise CheckpointError(f"{path}: big-endian checkpoints are not supported")

    def read_storage(self, key: str, dtype: np.dtype, numel: int) -> np.ndarray:
        name = f"{self.prefix}data/{key}"
        try:
            info = self.zip.getinfo(name)
        except KeyError as e:
            raise CheckpointError(f"{self.path}: storage {name} is missing from the archive") from e
        nbytes = numel * dtype.itemsize
        if info.file_size < nbytes:
            raise CheckpointError(f"{self.path}: storage {name} holds {info.file_size} bytes, needs {nbytes}")
        if info.compress_type == zipfile.ZIP_STORED:
            with open(self.path, "rb") as f:
                f.seek(info.header_offset)
                local = f.read(30)
            if local[:4] != b"PK\x03\x04":
                raise CheckpointError(f"{self.path}: bad zip local header for {name}")
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            start = info.header_offset + 30 + name_len + extra_len
            if numel == 0:
                return np.zeros(0, dtype)
            return np.memmap(self.path, dtype=dtype, mode="r", offset=start, shape=(numel,))
        return np.frombuffer(self.zip.read(name)[:nbytes], dtype=dtype)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: _Archive):
        super().__init__(io.BytesIO(data))
        self.archive = archive
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointError(
            f"{self.archive.path}: the pickle asks for {module}.{name}, which is not a tensor-rebuilding function; "
            "refusing to load it (nothing was executed). Re-save the checkpoint as a plain state dict."
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self.archive.path}: unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"{self.archive.path}: storage {key} has unknown type {storage_type!r}")
        if key not in self.storages:
            self.storages[key] = _Storage(self.archive, str(key), storage_type.dtype, int(numel))
        return self.storages[key]


def load_torch_pickle(path: str | os.PathLike):
    """Unpickle a torch zip checkpoint safely; tensors come back as :class:`LazyTensor`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    archive = _Archive(path)
    data = archive.zip.read(archive.prefix + "data.pkl")
    try:
        return _RestrictedUnpickler(data, archive).load()
    except CheckpointError:
        raise
    except Exception as e:  # a malformed pickle: say so, with the file
        raise CheckpointError(f"{path}: cannot unpickle ({type(e).__name__}: {e})") from e


class TorchStateDict(Mapping):
    """A flat ``name -> np.ndarray`` view of the tensors of a state dict inside a torch checkpoint."""

    def __init__(self, tensors: Mapping[str, LazyTensor], path: Path):
        self.path = path
        self._tensors = {}
        for k, v in tensors.items():
            if not isinstance(v, LazyTensor):
                raise CheckpointError(f"{path}: state dict entry {k!r} is a {type(v).__name__}, not a tensor")
            self._tensors[k] = v

    def __getitem__(self, name: str) -> np.ndarray:
        return self._tensors[name].numpy()

    def shape(self, name: str) -> tuple[int, ...]:
        return self._tensors[name].shape

    def dtype(self, name: str) -> np.dtype:
        return self._tensors[name].dtype

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)


#: where training checkpoints keep the weights: Sana ``state_dict``; DC-Gen ``ema_model_state_dict`` (a dict of EMA
#: state dicts: the first is taken) then ``model_state_dict``; Self-Forcing ``generator_ema`` (what its demo runs)
#: then CausVid / Self-Forcing ``generator``; generic ``model`` / ``module``.
STATE_DICT_KEYS = ("state_dict", "ema_model_state_dict", "model_state_dict", "generator_ema", "generator", "model",
                   "module")


def open_torch_state_dict(path: str | os.PathLike, nested: tuple[str, ...] = STATE_DICT_KEYS) -> TorchStateDict:
    """Open a ``.pth``/``.pt`` and return its state dict: the first key of ``nested`` present is descended into,
    and a dict of state dicts (EMA copies) yields its first one."""
    path = Path(path)
    obj = load_torch_pickle(path)
    if isinstance(obj, Mapping):
        for key in nested:
            if key in obj and isinstance(obj[key], Mapping) and obj[key]:
                obj = obj[key]
                break
        values = list(obj.values())
        if values and all(isinstance(v, Mapping) for v in values):
            obj = values[0]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, found a {type(obj).__name__}")
    return TorchStateDict(obj, path)

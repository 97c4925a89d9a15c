"""Streaming safetensors reading and atomic writing, without torch.

The header is parsed here and each tensor is a read-only ``np.memmap`` view, so a bf16 tensor stays bf16
(``ml_dtypes.bfloat16``) with no float32 copy, and only the tensor being converted is ever paged in.
Sharded checkpoints (``*.safetensors.index.json``) are read through their ``weight_map``.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import ml_dtypes
import numpy as np

from sana_jax.config import read_json
from sana_jax.errors import CheckpointError

_DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


class SafetensorsFile(Mapping):
    """A read-only mapping ``name -> np.ndarray`` (memory-mapped) over one ``.safetensors`` file.

    The whole header is validated when the file is opened: a truncated file, an offset outside the file or a
    byte count that disagrees with the shape raises :class:`CheckpointError` before any tensor is used.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    raise CheckpointError(f"{self.path}: file is {size} bytes, too short to be safetensors")
                (n,) = struct.unpack("<Q", head)
                if n > _MAX_HEADER or 8 + n > size:
                    raise CheckpointError(
                        f"{self.path}: header claims {n} bytes but the file has {size}; truncated or not safetensors"
                    )
                header = json.loads(f.read(n))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{self.path}: cannot read the safetensors header ({e})") from e
        self.metadata = header.pop("__metadata__", None) or {}
        self._data_start = 8 + n
        self._entries: dict[str, tuple[np.dtype, tuple[int, ...], int, int]] = {}
        for name, info in header.items():
            try:
                dtype = _DTYPES[info["dtype"]]
                shape = tuple(int(s) for s in info["shape"])
                begin, end = (int(o) for o in info["data_offsets"])
            except (KeyError, TypeError, ValueError) as e:
                raise CheckpointError(f"{self.path}: tensor {name!r} has an invalid header entry {info!r}") from e
            expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if end - begin != expected:
                raise CheckpointError(
                    f"{self.path}: tensor {name!r} of shape {shape} {info['dtype']} needs {expected} bytes, "
                    f"header gives {end - begin}"
                )
            if self._data_start + end > size:
                raise CheckpointError(
                    f"{self.path}: tensor {name!r} ends at byte {self._data_start + end} but the file has {size} "
                    "bytes; the file is truncated"
                )
            self._entries[name] = (dtype, shape, begin, end)

    def __getitem__(self, name: str) -> np.ndarray:
        dtype, shape, begin, end = self._entries[name]
        if begin == end:
            return np.zeros(shape, dtype)
        return np.memmap(self.path, dtype=dtype, mode="r", offset=self._data_start + begin, shape=shape)

    def read_slice(self, name: str, index: tuple[slice, ...]) -> np.ndarray:
        """``self[name][index]`` as an in-memory array: only the pages holding the block are read."""
        return np.array(self[name][index])

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name][1]

    def dtype(self, name: str) -> np.dtype:
        return self._entries[name][0]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


class ShardedSafetensors(Mapping):
    """The union of the shards named by a ``*.safetensors.index.json`` file, read lazily."""

    def __init__(self, index_path: str | os.PathLike):
        self.path = Path(index_path)
        weight_map = read_json(self.path, error=CheckpointError).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{self.path}: not a safetensors index (needs a 'weight_map' object)")
        self._files: dict[str, SafetensorsFile] = {}
        self._where: dict[str, SafetensorsFile] = {}
        for name, shard in weight_map.items():
            if shard not in self._files:
                shard_path = self.path.parent / shard
                if not shard_path.exists():
                    raise CheckpointError(f"{self.path}: shard {shard} (holding {name!r}) is missing")
                self._files[shard] = SafetensorsFile(shard_path)
            if name not in self._files[shard]:
                raise CheckpointError(f"{self.path}: index puts {name!r} in {shard}, which does not hold it")
            self._where[name] = self._files[shard]

    def __getitem__(self, name: str) -> np.ndarray:
        return self._where[name][name]

    def read_slice(self, name: str, index: tuple[slice, ...]) -> np.ndarray:
        return self._where[name].read_slice(name, index)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._where[name].shape(name)

    def dtype(self, name: str) -> np.dtype:
        return self._where[name].dtype(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def open_safetensors(path: str | os.PathLike) -> SafetensorsFile | ShardedSafetensors:
    """Open a single ``.safetensors`` file or a sharded checkpoint's ``.safetensors.index.json``."""
    path = Path(path)
    if path.name.endswith(".index.json"):
        return ShardedSafetensors(path)
    return SafetensorsFile(path)


def save_safetensors(tensors: Mapping[str, np.ndarray], path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write ``tensors`` to ``path`` atomically (a temporary file in the same folder, renamed when complete)."""
    path = Path(path)
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    arrays = {}
    for name, value in tensors.items():
        arr = np.asarray(value)
        if not arr.flags.c_contiguous:  # (np.ascontiguousarray would also turn a 0-d array into 1-d)
            arr = np.ascontiguousarray(arr)
        if arr.dtype not in _NAMES:
            raise CheckpointError(f"cannot store {name!r}: dtype {arr.dtype} has no safetensors name")
        arrays[name] = arr
        header[name] = {"dtype": _NAMES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(blob)))
            f.write(blob)
            for arr in arrays.values():
                f.write(arr.tobytes())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

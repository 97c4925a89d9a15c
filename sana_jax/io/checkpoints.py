"""Orbax checkpoints of converted models: ``params/`` (orbax) + ``sana_jax.json`` (family, config, dtype).

Written into a temporary sibling folder and renamed when complete, so an interrupted save never leaves a
folder that looks like a checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp

from sana_jax.config import read_json
from sana_jax.errors import CheckpointError
from sana_jax.io.files import atomic_directory
from sana_jax.io.interrupt import defer_sigint

MANIFEST = "sana_jax.json"


def save(params: dict, manifest: dict, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Save a (nested) dict of arrays with ``manifest`` to ``path`` atomically."""
    path = Path(path).absolute()
    with atomic_directory(path, overwrite=overwrite, error=CheckpointError) as tmp:
        # orbax writes from its own threads: a Ctrl-C raised among them leaves them writing into the folder being
        # removed (and dumps their tracebacks), so it waits for the write, then the whole folder goes
        with defer_sigint(), ocp.StandardCheckpointer() as ckptr:
            ckptr.save(tmp / "params", params)
            ckptr.wait_until_finished()
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return path


def is_checkpoint(path: str | os.PathLike) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_manifest(path: str | os.PathLike) -> dict:
    return read_json(Path(path) / MANIFEST, error=CheckpointError)


def restore(path: str | os.PathLike, target: dict) -> dict:
    """Restore the arrays saved at ``path`` into the structure (shapes, dtypes) of ``target``."""
    path = Path(path).absolute()
    try:
        with ocp.StandardCheckpointer() as ckptr:
            return ckptr.restore(path / "params", target)
    except Exception as e:  # orbax raises a variety of errors for mismatching trees
        raise CheckpointError(f"{path}: cannot restore parameters ({type(e).__name__}: {e})") from e


def abstract_leaves(tree: dict) -> dict:
    """Turn a pure dict of ShapeDtypeStructs/arrays into what ``restore`` wants as a target."""
    import jax

    return jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, np.dtype(v.dtype)), tree)

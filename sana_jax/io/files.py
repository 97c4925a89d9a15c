"""Writing folders atomically: everything goes into a temporary sibling, renamed into place when complete."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, overwrite: bool = False, error=FileExistsError) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path``, on any exception (Ctrl-C too) it
    is removed and ``path`` is untouched. ``error`` is raised (with the path) when ``path`` exists and not
    ``overwrite``."""
    path = Path(path).absolute()
    if path.exists() and not overwrite:
        raise error(f"{path} exists; choose another destination or allow overwriting")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

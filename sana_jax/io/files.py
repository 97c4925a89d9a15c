"""Outputs: destinations checked before any work, files and folders written under a temporary name and renamed into
place when complete.

One policy for every command and API that writes: an existing output is refused unless overwriting is asked for
(``--overwrite`` / ``overwrite=True``); a temporary name is unique to its run (two runs writing the same output never
share one); a failed run removes its temporary and leaves the destination as it was.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from sana_jax.errors import InputError


def _named(path: Path, option: str | None) -> str:
    return f"{option} {path}" if option else str(path)


def _overwrite_hint(option: str | None) -> str:
    return "pass --overwrite to replace it" if option else "pass overwrite=True (--overwrite) to replace it"


def check_parent(path: str | os.PathLike, option: str | None = None) -> Path:
    """``path`` if the nearest existing folder above it is a folder this process may write in (the rest of the way
    is created when writing), else an :class:`InputError` naming ``option``."""
    path = Path(path)
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{_named(path, option)}: cannot be created, {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{_named(path, option)}: cannot write in {parent} (read-only or permission denied)")
    return path


def check_output_file(path: str | os.PathLike, option: str | None = "--out", *, suffixes: tuple[str, ...] = (".mp4",),
                      overwrite: bool = False) -> Path:
    """Refuse, before any work, an output file that cannot be written: a suffix not in ``suffixes`` (the formats
    written), an existing folder, an existing file without ``overwrite``, or a parent folder that cannot be created
    or written in. Returns ``path``. ``option`` names the command-line option in the message (None: the Python
    API)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{_named(path, option)}: is a folder; give a file path ending in {suffixes[0]}")
    if path.suffix.lower() not in suffixes:
        raise InputError(f"{_named(path, option)}: the output must be a {' or '.join(suffixes)} file (the formats "
                         "written)")
    if path.exists() and not overwrite:
        raise InputError(f"{_named(path, option)}: exists; {_overwrite_hint(option)}")
    return check_parent(path, option)


def check_output_folder(path: str | os.PathLike, option: str | None = "--out", *, overwrite: bool = False,
                        resumable: bool = False) -> Path:
    """Refuse, before any work, an output folder that cannot be written: an existing file, an existing folder
    without ``overwrite`` (``resumable``: an existing folder is a run to continue, never replaced), or a parent that
    cannot be created or written in. Returns ``path``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{_named(path, option)}: is a file; give a folder")
    if path.is_dir() and not (overwrite or resumable):
        raise InputError(f"{_named(path, option)}: exists; {_overwrite_hint(option)}")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise InputError(f"{_named(path, option)}: cannot write in it (read-only or permission denied)")
        return path
    return check_parent(path, option)


def unique_temporary(path: str | os.PathLike, suffix: str = "") -> Path:
    """A new empty file beside ``path``, ``.NAME.XXXXXXXX.partial<suffix>``, created exclusively: no other run gets
    the same name. The parent folders are created; an :class:`InputError` says why when they cannot be."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return _create_unique(path.parent, f".{path.stem}.", f".partial{suffix}",
                              lambda name: os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)))
    except OSError as e:
        raise InputError(f"{path}: cannot create a file in {path.parent} ({e.strerror or e})") from e


def _create_unique(folder: Path, prefix: str, suffix: str, create) -> Path:
    """``create(name)`` for a new random ``folder/prefix XXXXXXXX suffix`` until one does not exist yet. Unlike
    ``tempfile``'s (0600 / 0700), the result gets the umask's usual permissions, which the output keeps."""
    for _ in range(100):
        name = folder / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            create(name)
        except FileExistsError:
            continue
        return name
    raise FileExistsError(f"no free temporary name like {prefix}XXXXXXXX{suffix} in {folder}")


def publish(tmp: Path, path: Path, *, overwrite: bool = False) -> Path:
    """Rename the complete ``tmp`` to ``path`` atomically. Without ``overwrite`` a ``path`` that appeared meanwhile
    (another run writing the same output) is never replaced: ``tmp`` is removed and an :class:`InputError` says so."""
    if overwrite:
        os.replace(tmp, path)
        return path
    try:
        os.link(tmp, path)  # fails atomically when path exists
    except FileExistsError:
        tmp.unlink(missing_ok=True)
        raise InputError(f"{path}: appeared while this run was writing it (another run with the same output?); "
                         "not replaced, and this run's file discarded (--overwrite / overwrite=True replaces it)"
                         ) from None
    except OSError:  # a file system without hard links: check, then rename (not atomic against a concurrent run)
        if path.exists():
            tmp.unlink(missing_ok=True)
            raise InputError(f"{path}: appeared while this run was writing it; not replaced") from None
        os.replace(tmp, path)
        return path
    tmp.unlink()
    return path


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, overwrite: bool = False, error=FileExistsError) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path``, on any exception (Ctrl-C too) it
    is removed and ``path`` is untouched. ``error`` is raised (with the path) when ``path`` exists and not
    ``overwrite``."""
    path = Path(path).absolute()
    if path.exists() and not overwrite:
        raise error(f"{path} exists; choose another destination or pass --overwrite (overwrite=True) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_unique(path.parent, f".{path.name}.", ".tmp", lambda name: os.mkdir(name, 0o777))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

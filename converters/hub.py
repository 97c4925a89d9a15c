"""Hugging Face Hub ids as diffusers users type them (``Efficient-Large-Model/SANA-Video_2B_480p_diffusers``).

:func:`resolve` is the one place a model path becomes a local folder: a path that exists is used as it is; one that
does not and has the form ``org/name`` is looked up with ``huggingface_hub.snapshot_download``, which honours the
hub's cache (``HF_HUB_CACHE`` / ``HF_HOME``) and offline mode (``HF_HUB_OFFLINE=1``), and downloads only when
allowed to. ``converters.load``, ``PipelineFolder.open`` and every pipeline's ``from_pretrained`` / ``check`` call it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from sana_jax.errors import CheckpointError

# a Hub repository id: "org/name", each part letters, digits, '.', '_' or '-' (not starting with '.' or '-')
_REPO_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*/[A-Za-z0-9_][A-Za-z0-9._-]*")


def is_repo_id(text: str) -> bool:
    """Whether ``text`` has the form of a Hub repository id (``org/name``)."""
    return bool(_REPO_ID.fullmatch(str(text))) and ".." not in str(text)


def resolve(path_or_id: str | os.PathLike, *, local_files_only: bool = False) -> Path:
    """The local path of a model: ``path_or_id`` itself when it exists or is not of the form ``org/name`` (callers
    report a missing path), else the snapshot folder of that Hub repository in the Hugging Face cache, downloaded
    first unless ``local_files_only`` or ``HF_HUB_OFFLINE`` forbid it.

    Raises:
      CheckpointError: the repository is not in the cache and may not be downloaded (offline), or the Hub refused
        it (not found, gated, unreachable); the message names the id and the cache folder.
    """
    path = Path(path_or_id).expanduser()
    if path.exists() or not is_repo_id(os.fspath(path_or_id)):
        return path
    repo_id = os.fspath(path_or_id)
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    offline = local_files_only or bool(constants.HF_HUB_OFFLINE)
    try:
        return Path(snapshot_download(repo_id, local_files_only=offline))
    except LocalEntryNotFoundError as e:
        why = ("offline (HF_HUB_OFFLINE=1 or local_files_only=True)" if offline
               else f"the Hub could not be reached ({e})")
        raise CheckpointError(f"{repo_id}: no such local folder, and this Hub repository is not in the Hugging Face "
                              f"cache ({constants.HF_HUB_CACHE}) while {why}; download it first "
                              f"(`hf download {repo_id}`) or pass a local folder") from e
    except HfHubHTTPError as e:  # not found, gated, private, or the Hub failing
        raise CheckpointError(f"{repo_id}: no such local folder, and the Hugging Face Hub refused it ({e})") from e

"""The one progress bar of the package (tqdm, drawn on stderr, gone when done; a no-op when disabled)."""

from __future__ import annotations


def progress_bar(enabled: bool, total: int | None = None, desc: str = "", unit: str = "it"):
    """A ``tqdm`` bar over ``total`` units (None: a counter), or a disabled one whose ``update`` does nothing."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False)

"""The one progress bar of the package (tqdm, drawn on stderr, gone when done; a no-op when disabled)."""

from __future__ import annotations


def progress_bar(enabled: bool, total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0):
    """A ``tqdm`` bar over ``total`` units (None: a counter) starting at ``initial`` (a resumed run), or a disabled
    one whose ``update`` does nothing."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, leave=False)

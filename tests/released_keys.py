"""Parameter names and shapes of the released checkpoints (tests/data/keys/, origin in tests/data/README.md), for
the full-size tests: ``jax.eval_shape`` of a full configuration must give exactly these, in every layout."""

from __future__ import annotations

import re
from pathlib import Path

KEYS = Path(__file__).resolve().parent / "data" / "keys"
#: a section title: '### …', '=== …' or '---- … ----'
_TITLE = re.compile(r"^(?:###|===|----)\s*(.*?)[\s-]*$")
#: 'name (d0, d1, …)', the shape after a space or a tab, optionally followed by a dtype
_ENTRY = re.compile(r"^(\S+)\s+\(([\d, ]*)\)")


def read(name: str, section: str | None = None) -> dict[str, tuple[int, ...]]:
    """``name → shape`` from ``tests/data/keys/<name>``: the entries of every section whose title contains
    ``section``, or with ``section=None`` the entries before the first title. Other lines (counts) are skipped."""
    out, on = {}, section is None
    for line in (KEYS / name).read_text().splitlines():
        if m := _TITLE.match(line):
            on = section is not None and section in m[1]
        elif on and (m := _ENTRY.match(line)):
            out[m[1]] = tuple(int(x) for x in m[2].split(",") if x.strip())
    return out


def all_blocks(keys: dict, layers: int, prefix: str = "transformer_blocks.") -> dict:
    """The key lists give block 0 only: repeat its entries for blocks 0 … layers − 1."""
    block0 = f"{prefix}0."
    out = {k: v for k, v in keys.items() if not k.startswith(prefix)}
    for i in range(layers):
        out.update({k.replace(block0, f"{prefix}{i}.", 1): v for k, v in keys.items() if k.startswith(block0)})
    return out


class Shapes(dict):
    """A ``name → shape`` mapping standing in for a checkpoint whose tensors are never read."""

    def shape(self, name):
        return self[name]

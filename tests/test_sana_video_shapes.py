"""Full-size configs: ``jax.eval_shape`` gives exactly the released checkpoints' names and shapes."""

from __future__ import annotations

import re
from pathlib import Path

import jax
import pytest
from flax import nnx

from converters import sana_video
from sana_jax.models.sana_video import SanaVideoConfig, SanaVideoTransformer

KEYS = Path(__file__).resolve().parents[1].parent / "shared" / "specs" / "keys" / \
    "sana_video_diffusers_state_dict_shapes.txt"


def released_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
    """Parse the spec's dump: '=== 480p: …' sections of 'name (d0, d1, …) dtype' lines."""
    sections, current = {}, None
    for line in KEYS.read_text().splitlines():
        if m := re.match(r"=== (\w+):", line):
            current = sections.setdefault(m.group(1), {})
        elif m := re.match(r"(\S+) \(([\d, ]*)\) torch\.\w+", line):
            current[m.group(1)] = tuple(int(x) for x in m.group(2).split(",") if x.strip())
    return sections


@pytest.mark.skipif(not KEYS.exists(), reason="shared/specs not beside the checkout")
@pytest.mark.parametrize("preset,count", [("480p", 2_056_862_144), ("720p", 2_057_148_928)])
def test_full_config_matches_released_keys(preset, count):
    cfg = SanaVideoConfig.preset(preset)
    released = released_shapes()[preset]
    # The dump lists block 0 only; the real checkpoint repeats it for blocks 0..19.
    block0 = {k: v for k, v in released.items() if k.startswith("transformer_blocks.0.")}
    for i in range(1, cfg.num_layers):
        released.update({k.replace(".0.", f".{i}.", 1): v for k, v in block0.items()})
    ours = sana_video.expected_tensors(cfg)
    assert ours == released
    abstract = nnx.eval_shape(lambda: SanaVideoTransformer(cfg, rngs=nnx.Rngs(0)))
    n = sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    assert n == count

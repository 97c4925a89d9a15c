"""Full-size configs: ``jax.eval_shape`` gives exactly the released checkpoints' names and shapes."""

from __future__ import annotations

import jax
import pytest
from flax import nnx

from converters import sana_video
from sana_jax.models.sana_video import SanaVideoConfig, SanaVideoTransformer
from tests.released_keys import all_blocks, read


@pytest.mark.parametrize("preset,count", [("480p", 2_056_862_144), ("720p", 2_057_148_928)])
def test_full_config_matches_released_keys(preset, count):
    cfg = SanaVideoConfig.preset(preset)
    released = all_blocks(read("sana_video_2b.txt", f"{preset}:"), cfg.num_layers)  # the list holds block 0 only
    assert sana_video.expected_tensors(cfg) == released
    abstract = nnx.eval_shape(lambda: SanaVideoTransformer(cfg, rngs=nnx.Rngs(0)))
    n = sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    assert n == count

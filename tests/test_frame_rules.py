"""The frame-count rule the pipelines check before loading: the VAE's latent frames must be a multiple of the
DiT's temporal patch (``pipelines.components.check_video_size``)."""

from __future__ import annotations

import pytest

from sana_jax.errors import InputError
from sana_jax.pipelines.components import check_video_size


@pytest.mark.parametrize("temporal,patch_t,causal,first", [
    (4, 1, True, [1, 5, 9]),  # Wan / LTX-2-style: 1 + 4k frames → 1 + k latent frames
    (1, 9, True, [9, 18, 27]),  # per-frame VAE, a temporal patch over 9 frames (the embedded default model)
    (4, 2, True, [5, 13, 21]),  # 1 + (F − 1)/4 latent frames must be even
    (4, 1, False, [4, 8, 12]),  # DC-AE-V: F/4 latent frames
    (4, 2, False, [8, 16, 24]),
])
def test_valid_frame_counts(temporal, patch_t, causal, first):
    accepted = []
    for frames in range(1, 90):
        try:
            check_video_size(64, 64, frames, temporal, 8, (patch_t, 1, 1), causal_first_frame=causal)
            accepted.append(frames)
        except InputError:
            pass
    assert accepted[:3] == first
    for frames in accepted:  # the latent frame count is always a whole multiple of the patch
        latent = 1 + (frames - 1) // temporal if causal else frames // temporal
        assert latent % patch_t == 0 and (frames - 1 if causal else frames) % temporal == 0


def test_error_names_the_rule_and_nearest_values():
    with pytest.raises(InputError, match=r"--frames 10: the frame count must be 9 \+ 9·k; nearest valid 9 or 18"):
        check_video_size(64, 64, 10, 1, 8, (9, 1, 1))
    with pytest.raises(InputError, match=r"must be 5 \+ 8·k; nearest valid 5 or 13"):
        check_video_size(64, 64, 9, 4, 8, (2, 1, 1))
    with pytest.raises(InputError, match=r"must be 1 \+ 4·k; nearest valid 9 or 13"):
        check_video_size(64, 64, 12, 4, 8)

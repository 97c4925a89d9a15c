"""Shared by the video VAEs: the pipeline protocol's common half, and input checks (frame counts of the form
1 + s·k, sizes that are multiples of m)."""

from __future__ import annotations

from sana_jax.errors import InputError


def nearest_valid(n: int, step: int, offset: int = 0) -> tuple[int, int]:
    """The valid values ``offset + step·k`` (k ≥ 0, value ≥ max(offset, 1)) just below and above ``n``."""
    low = offset + step * max((n - offset) // step, 0)
    low = max(low, offset if offset > 0 else step)
    high = low if low >= n else low + step
    if low > n:
        return low, low
    return low, high


def check_video(shape: tuple[int, ...], *, frame_step: int, frame_offset: int, spatial: int, channels: int,
                what: str = "video") -> None:
    """Raise :class:`InputError` unless ``shape`` is (B, T, H, W, channels) with T = offset + step·k and
    H, W multiples of ``spatial``; the message gives the nearest valid values."""
    if len(shape) != 5:
        raise InputError(f"{what} must be (B, T, H, W, C) channels-last, got shape {tuple(shape)}")
    _, t, h, w, c = shape
    if c != channels:
        raise InputError(f"{what} has {c} channels, expected {channels} (channels-last (B, T, H, W, C))")
    if t < max(frame_offset, 1) or (t - frame_offset) % frame_step:
        lo, hi = nearest_valid(t, frame_step, frame_offset)
        form = f"{frame_offset} + {frame_step}·k" if frame_offset else f"a multiple of {frame_step}"
        raise InputError(f"{what} has {t} frames; the frame count must be {form}: nearest valid {lo} or {hi}")
    for name, size in (("height", h), ("width", w)):
        if size % spatial or size == 0:
            lo, hi = nearest_valid(size, spatial)
            raise InputError(f"{what} {name} {size} is not a multiple of {spatial}: nearest valid {lo} or {hi}")


class PipelineVAE:
    """Mixin: what the pipelines call on every VAE (``SanaVideoPipeline``, the training cache).

    A VAE provides ``compression`` → (temporal, spatial), ``decode_for_pipeline(latents, tile=)`` on normalised
    latents, and ``encode`` → normalised posterior mean; ``causal_first_frame`` says whether frames are
    1 + t·k (latent frame 0 holds video frame 0 alone: Wan, LTX-2) or t·k (DC-AE-V).
    """

    causal_first_frame = True

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames of a ``num_frames`` video: 1 + t·k → 1 + k, or t·k → k."""
        t = self.compression[0]
        return (num_frames - 1) // t + 1 if self.causal_first_frame else num_frames // t

    def encode_for_pipeline(self, video):
        """Video (B, T, H, W, 3) in [-1, 1] → normalised posterior mean (an image is one frame)."""
        return self.encode(video)

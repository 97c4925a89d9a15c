"""Runs that cannot fit in memory are refused before anything is loaded (``sana_jax.pipelines.memory``): one line with
the estimated peak, what the device has and the options that fit by the same estimate; the released configs at
their defaults fit an 80 GB GPU; the check is arithmetic (no array is allocated).

What the device has is fixed per test (``memory.device_memory`` patched) so the outcome does not depend on the
machine running the suite."""

from __future__ import annotations

import re
import time

import jax
import pytest

from sana_jax.demo import default_model_path
from sana_jax.errors import InputError
from sana_jax.models.sana_video import SanaVideoConfig
from sana_jax.pipelines import SanaVideoPipeline, memory
from sana_jax.pipelines.memory import GiB, Capacity, ModelSizes
from sana_jax.pipelines.streaming import StreamingPipeline
from sana_jax.vae import LTX2VAEConfig, WanVAEConfig, ltx2, wan
from tests.bad_inputs import assert_refused, leftovers

PROMPT = "a red circle moving left"
DEFAULT = default_model_path()
HUGE = {"num_frames": 1021, "height": 2048, "width": 2048}  # the issue's request


def cpu(gib: float) -> Capacity:
    return Capacity("cpu", "cpu", int(gib * GiB), int(gib * GiB))


@pytest.fixture
def device(monkeypatch):
    """``device(capacity)``: what every memory check of the test sees."""
    def set_capacity(capacity: Capacity) -> None:
        monkeypatch.setattr(memory, "device_memory", lambda: capacity)

    set_capacity(cpu(16))
    return set_capacity


def options(message: str) -> dict[str, float]:
    """'options that fit: --frames 45 (≈ 15.1 GiB), --height 432 --width 432 (≈ 14.2 GiB)' → {flags: GiB}."""
    listed = message.split("options that fit: ", 1)[1]
    return {flags: float(gib) for flags, gib in re.findall(r"(--[^(]+?) \(≈ ([\d.]+) GiB\)", listed)}


def test_issue_case_refused_by_the_cli(device, capsys, tmp_path, monkeypatch):
    def load(*args, **kwargs):
        raise AssertionError("weights loaded before the memory check")

    monkeypatch.setattr(SanaVideoPipeline, "from_pretrained", load)
    out = tmp_path / "video.mp4"
    line = assert_refused(["generate", PROMPT, "--frames", 1021, "--height", 2048, "--width", 2048, "--out", out],
                          capsys, "needs about", "1021 frames at 2048×2048", "cpu has 16.0 GiB available",
                          "options that fit", "--frames")
    assert float(re.search(r"about ([\d.]+) GiB", line)[1]) > 100  # 33 M tokens with guidance: far beyond 16 GiB
    assert leftovers(tmp_path) == []


def test_issue_case_refused_by_the_api_with_options_that_fit(device):
    with pytest.raises(InputError, match="at its peak") as refused:
        SanaVideoPipeline.check(DEFAULT, **HUGE)
    message = str(refused.value)
    assert "\n" not in message
    fitting = options(message)
    assert all(gib <= 16.0 for gib in fitting.values()), message
    frames = [int(f.split()[1]) for f in fitting if f.startswith("--frames")]
    sizes = [tuple(map(int, re.findall(r"\d+", f))) for f in fitting if f.startswith("--height")]
    assert len(frames) == len(sizes) == 1 and len(fitting) == 2, message  # the patch VAE has no tiles
    # each option passes the same check; the next frame count (1 + k) and the next size (multiples of 16) do not
    SanaVideoPipeline.check(DEFAULT, num_frames=frames[0], height=2048, width=2048)
    SanaVideoPipeline.check(DEFAULT, num_frames=1021, height=sizes[0][0], width=sizes[0][1])
    for bigger in ({"num_frames": frames[0] + 1, "height": 2048, "width": 2048},
                   {"num_frames": 1021, "height": sizes[0][0] + 16, "width": sizes[0][1] + 16}):
        with pytest.raises(InputError, match="at its peak"):
            SanaVideoPipeline.check(DEFAULT, **bigger)


def test_a_small_device_refuses_a_moderate_run(device):
    moderate = {"num_frames": 33, "height": 256, "width": 256}
    SanaVideoPipeline.check(DEFAULT, **moderate)  # 16 GiB: fits
    device(cpu(0.4))
    with pytest.raises(InputError, match=r"needs about [\d.]+ GiB .*denoising 33 frames at 256×256.*cpu has 0\.4"):
        SanaVideoPipeline.check(DEFAULT, **moderate)
    SanaVideoPipeline.check(DEFAULT)  # the embedded model's own 64×64×9 still fits
    with pytest.raises(InputError, match=r"options that fit: --chunk-frames \d") as refused:
        StreamingPipeline.check(DEFAULT, num_chunks=3, chunk_frames=40, height=512, width=512)
    k = int(re.search(r"--chunk-frames (\d+)", str(refused.value))[1])
    StreamingPipeline.check(DEFAULT, num_chunks=3, chunk_frames=k, height=512, width=512)


def released(preset: str) -> ModelSizes:
    """A released SANA-Video pipeline's sizes without its weights: the 2B DiT, Gemma-2-2B, and its VAE (parameter
    counts of the released checkpoints)."""
    params = {"transformer": 2_060_000_000, "text_encoder": 2_614_000_000}
    if preset == "480p":
        return ModelSizes(SanaVideoConfig.preset("480p"), wan.DIFFUSERS_CLASS, WanVAEConfig(),
                          {**params, "vae": 126_900_000})
    return ModelSizes(SanaVideoConfig.preset("720p"), ltx2.DIFFUSERS_CLASS, LTX2VAEConfig(),
                      {**params, "vae": 1_246_900_000})


@pytest.mark.parametrize("preset, size, option", [("480p", (480, 832), "--mesh data=2 over 2 devices"),
                                                  ("720p", (704, 1280), "--vae-tile 16")])
def test_released_configs_at_their_defaults_fit_an_80gb_gpu(preset, size, option):
    # what JAX's allocator gets of an 80 GB H100 by default (75 %), and a host with 64 GiB
    h100 = Capacity("gpu (NVIDIA H100 80GB HBM3)", "gpu", int(0.75 * 80e9), 64 * GiB)
    sizes = released(preset)
    estimate = memory.check_generation(sizes, num_frames=81, height=size[0], width=size[1], guidance_scale=6.0,
                                       valid_frames=(sizes.vae.temporal_compression, 1), size_step=32,
                                       dtype="bfloat16", capacity=h100)
    assert 10 * GiB < estimate.peak < h100.device
    # twice the frames at twice the size does not fit: the 480p model's peak is its DiT (a mesh splits it), the
    # 720p model's the LTX-2 decode of the whole clip (tiles bound it)
    with pytest.raises(InputError, match=r"gpu \(NVIDIA H100 80GB HBM3\) has 55\.9 GiB free") as refused:
        memory.check_generation(sizes, num_frames=161, height=2 * size[0], width=2 * size[1], guidance_scale=6.0,
                                valid_frames=(sizes.vae.temporal_compression, 1), size_step=32, dtype="bfloat16",
                                capacity=h100)
    assert option in options(str(refused.value)), str(refused.value)


def test_8bit_weights_are_counted_at_a_byte_per_dense_parameter():
    """``weights="int8"`` / ``"fp8"``: the estimate counts the DiT's and the text encoder's dense kernels (counted from
    their configs) at one byte each, the rest in ``dtype``; so a run that needs the halved weights is accepted with
    them and refused without (the released 720p DiT: 4.1 GB of bf16 weights, 2.1 GB in 8 bits)."""
    from converters import sana_video
    from converters.loader import eight_bit_parameters

    dense = eight_bit_parameters(sana_video, SanaVideoConfig.preset("720p"))
    assert 2.05e9 < dense < 2.06e9  # of 2.06e9: all but norms, biases, embeddings, the small convs
    sizes = ModelSizes(**{**vars(released("720p")), "eight_bit": {"transformer": dense}})
    request = dict(num_frames=81, height=704, width=1280, guidance_scale=6.0, dtype="bfloat16", vae_tile=16)
    full = memory.estimate_generation(sizes, platform="gpu", **request)
    eight = memory.estimate_generation(sizes, platform="gpu", weights="int8", **request)
    assert full.weights - eight.weights == dense
    between = Capacity("gpu", "gpu", (full.peak + eight.peak) // 2, 64 * GiB)
    rules = dict(valid_frames=(8, 1), size_step=32, capacity=between)
    assert memory.check_generation(sizes, **request, **rules, weights="int8").peak == eight.peak
    with pytest.raises(InputError, match="at its peak"):
        memory.check_generation(sizes, **request, **rules)

    folder_sizes = ModelSizes.of_folder(memory.PipelineFolder.open(DEFAULT), "int8")
    assert set(folder_sizes.eight_bit) == {"transformer", "text_encoder"}
    assert 0 < folder_sizes.eight_bit["transformer"] < folder_sizes.params["transformer"]


def test_the_check_allocates_nothing_and_takes_milliseconds(device):
    SanaVideoPipeline.check(DEFAULT)  # JAX's backend started, the folder's files cached
    before = len(jax.live_arrays())
    start = time.perf_counter()
    with pytest.raises(InputError, match="at its peak"):
        SanaVideoPipeline.check(DEFAULT, **HUGE)
    assert time.perf_counter() - start < 1.0  # configs and headers: no tracing, no compilation
    assert len(jax.live_arrays()) <= before  # nothing new on the device


def test_available_memory_is_capped_by_the_cgroup(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text("MemTotal: 33554432 kB\nMemAvailable: 16777216 kB\nSwapFree: 0 kB\n")
    assert memory.host_memory(tmp_path) == 16 * GiB
    cgroup = tmp_path / "sys/fs/cgroup"
    cgroup.mkdir(parents=True)
    (cgroup / "memory.max").write_text(f"{4 * GiB}\n")
    (cgroup / "memory.current").write_text(f"{3 * GiB}\n")
    (cgroup / "memory.stat").write_text(f"anon {2 * GiB}\ninactive_file {GiB}\n")  # page cache it can reclaim
    assert memory.host_memory(tmp_path) == 2 * GiB
    (cgroup / "memory.max").write_text("max\n")
    assert memory.host_memory(tmp_path) == 16 * GiB

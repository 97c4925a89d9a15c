"""Streaming a Wan2.1 student (CausVid / Self-Forcing checkpoint + a Wan2.1 base folder in either layout): the
pipeline is the causal DiT's sampler with the base's text encoder and VAE, the original layout loads what the
diffusers one does, and ``sana-jax stream --model CKPT --base FOLDER`` writes the video. Every test streams 32×48
pixels in chunks of 3 latent frames, so the compiled chunk step and decoder are shared."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.bad_inputs import assert_refused, run_cli
from tests.wan_folders import same_weights, student_checkpoint, tiny_wan_folder

from sana_jax.io.video import read_video  # noqa: E402
from sana_jax.models import wan_causal  # noqa: E402
from sana_jax.pipelines.streaming import StreamingPipeline  # noqa: E402
from sana_jax.pipelines.wan import WanPipeline  # noqa: E402

SIZE = dict(height=32, width=48)
PROMPT = "a red circle moving left"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("wan")
    pytest.importorskip("torch")
    student = student_checkpoint(root / "self_forcing_dmd.pt", kind="self-forcing")
    return {"diffusers": tiny_wan_folder(root / "diffusers"), "original": tiny_wan_folder(root / "original",
                                                                                          layout="original"),
            "checkpoint": root / "self_forcing_dmd.pt", "student": student}


@pytest.fixture(scope="module")
def pipe(files):
    return StreamingPipeline.from_wan(files["diffusers"], files["checkpoint"], size=(32, 48))


def test_student_stream_is_the_causal_samplers(files, pipe):
    """The pipeline's chunks are ``wan_causal``'s sampler on the Self-Forcing EMA weights with the base's text
    encoding: aligned chunks of 3, Self-Forcing's schedule, a cache as long as the stream."""
    assert same_weights(pipe.transformer, files["student"])
    np.testing.assert_allclose(pipe.schedule.timesteps, [1000, 937.5, 833.333, 625], atol=1e-3)
    chunks = list(pipe.iter_chunks(PROMPT, num_chunks=3, seed=4, **SIZE))
    assert [c.latents.shape[1] for c in chunks] == [3, 3, 3]
    assert sum(c.frames.shape[0] for c in chunks) == 1 + 4 * 8  # 9 latent frames

    dit = wan_causal.StreamingDiT(files["student"], donate=False)
    text, _ = pipe.encode_prompt(PROMPT)
    state = dit.init_state(text, height=4, width=6, frames=9)
    for c, chunk in enumerate(chunks):
        want, state = dit.sample_chunk(state, jax.random.key(4), c, pipe.schedule, shape=(1, 3, 4, 6, 16))
        np.testing.assert_allclose(np.asarray(chunk.latents), np.asarray(want), atol=1e-5)


def test_original_layout_base_loads_the_same(files, pipe):
    """The original Wan2.1 folder (.pth text encoder and VAE, google/umt5-xxl tokenizer) gives the diffusers
    folder's models: same prompt context, same VAE, same generated latents."""
    other = StreamingPipeline.from_wan(files["original"], files["checkpoint"], size=(32, 48))
    np.testing.assert_array_equal(np.asarray(other.encode_prompt(PROMPT)[0]), np.asarray(pipe.encode_prompt(PROMPT)[0]))
    assert same_weights(other.vae, pipe.vae)
    a = WanPipeline.from_pretrained(files["original"])
    b = WanPipeline.from_pretrained(files["diffusers"])
    assert a.scheduler_config["flow_shift"] == 5.0 and b.scheduler_config["flow_shift"] == 3.0  # Wan's vs diffusers'
    b.scheduler_config = a.scheduler_config
    request = dict(num_frames=5, num_inference_steps=2, guidance_scale=3.0, seed=1, decode=False, progress=False,
                   **SIZE)
    np.testing.assert_array_equal(a(PROMPT, **request).latents, b(PROMPT, **request).latents)


def test_rolling_window_with_sink(pipe):
    """window 1 + sink 1: the state (cache of 2 chunks) is the same size at every chunk, whatever the length."""
    states = [c.timing.state_bytes for c in pipe.iter_chunks(PROMPT, num_chunks=5, window=1, sink=1, **SIZE)]
    assert len(set(states)) == 1
    plain = list(pipe.iter_chunks(PROMPT, num_chunks=2, **SIZE))[-1].state_spec
    assert plain.slot_frame.shape == (6,)  # no window: the cache holds the whole stream


def test_cli_streams_a_student_checkpoint(files, tmp_path, capsys):
    out = tmp_path / "s.mp4"
    code, stdout, err = run_cli(["stream", PROMPT, "--model", files["checkpoint"], "--base", files["diffusers"],
                                 "--chunks", "3", "--window", "1", "--sink", "1", "--switch", "2:a dog",
                                 "--height", "32", "--width", "48", "--out", out, "-q"], capsys)
    assert code == 0, err
    assert len(read_video(out)) == 1 + 4 * 8
    assert "wrote" in stdout


def test_cli_refuses_what_a_wan_student_cannot_do(files, tmp_path, capsys, monkeypatch):
    base = ["stream", PROMPT, "--out", tmp_path / "x.mp4", "--height", "32", "--width", "48"]
    with_base = base + ["--model", files["checkpoint"], "--base", files["diffusers"]]
    assert_refused(with_base + ["--sink", "1"], capsys, "--sink", "--window")
    assert_refused(with_base + ["--motion-score", "3"], capsys, "--motion-score")
    assert_refused(base + ["--base", files["diffusers"]], capsys, "--model")
    assert_refused(base + ["--model", tmp_path / "none.pt", "--base", files["diffusers"]], capsys, "none.pt")
    assert_refused(base + ["--model", files["checkpoint"], "--base", tmp_path], capsys, "Wan2.1")
    from sana_jax.pipelines import memory

    monkeypatch.setattr(memory, "device_memory", lambda: memory.Capacity("gpu (tiny)", "gpu", 2**20, 2**30))
    assert_refused(with_base + ["--chunks", "3"], capsys, "KV cache of 9 latent frames", "--window")
    assert not (tmp_path / "x.mp4").exists()


def test_bf16_student_runs_in_bf16_throughout(files):
    """``dtype="bfloat16"``: the DiT's conditioning and cache are bf16 as the released students ran."""
    bf16 = StreamingPipeline.from_wan(files["diffusers"], files["checkpoint"], dtype="bfloat16", size=(32, 48))
    assert not bf16.transformer.float32_conditioning
    text, _ = bf16.encode_prompt(PROMPT)
    state = bf16.dit.init_state(jnp.asarray(text, jnp.bfloat16), height=4, width=6, frames=3)
    x, state = bf16.dit.sample_chunk(state, jax.random.key(0), 0, bf16.schedule, shape=(1, 3, 4, 6, 16))
    assert state.k.dtype == jnp.bfloat16 and np.isfinite(np.asarray(x)).all()

"""Streaming long video (LongSANA): chunks into a live mp4, Ctrl-C, exact streaming Wan decode, flat memory, prompt
switching, one compilation per chunk shape, the package's streaming DiT, checks before loading. A tiny diffusers
SANA-Video folder (``pipeline_refs.build``); every test uses the same chunk shapes so the module compiles each
executable once (XLA:CPU compiles the Wan decoder slowly)."""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.pipeline_refs import build

from sana_jax.errors import InputError  # noqa: E402
from sana_jax.io.video import read_video, to_uint8  # noqa: E402
from sana_jax.pipelines.streaming import StreamingPipeline, plan_chunks  # noqa: E402
from sana_jax.sampling.solvers import renoise_coefficients, renoise_step  # noqa: E402
from tests.conftest import max_rel_err  # noqa: E402

PROMPT = "a big blue square moving up"
OTHER = "a red circle moving left"
H, W = 32, 64  # latent 4 × 8, 2 × 4 tokens per latent frame
CHUNK = 2  # latent frames per chunk: (3, 2, 2, …) → 9, 8, 8, … video frames


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "pipe"
    build(path, "wan")
    return path


@pytest.fixture(scope="module")
def pipe(folder):
    return StreamingPipeline.from_pretrained(folder)


def stream(pipe, **kw):
    kw = {"num_chunks": 4, "chunk_frames": CHUNK, "height": H, "width": W, "progress": False, **kw}
    return pipe.stream(kw.pop("prompt", PROMPT), **kw)


def collect(pipe, **kw):
    kw = {"num_chunks": 4, "chunk_frames": CHUNK, "height": H, "width": W, **kw}
    return list(pipe.iter_chunks(kw.pop("prompt", PROMPT), **kw))


def readable_frames(path, want: int, timeout: float = 30.0) -> int:
    """Frames decodable from a file still being written (ffmpeg runs behind the pipe: poll until ``want``)."""
    deadline, n = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        try:
            n = read_video(path).shape[0]
        except (OSError, ValueError, RuntimeError):
            n = 0
        if n >= want:
            break
        time.sleep(0.2)
    return n


def test_plan_chunks():
    assert plan_chunks(seconds=60, fps=16) == (11,) + (10,) * 23  # 961 frames → 241 latent, as LongSANA
    assert plan_chunks(seconds=5, fps=16) == (11, 10)  # 81 frames
    assert plan_chunks(num_chunks=3) == (11, 10, 10)
    assert plan_chunks(num_chunks=2, chunk_frames=3, temporal_compression=8) == (4, 3)
    for bad in ({}, {"seconds": 1, "num_chunks": 1}, {"seconds": 0}, {"num_chunks": 0},
                {"num_chunks": 2, "chunk_frames": 0}):
        with pytest.raises(InputError):
            plan_chunks(**bad)


def test_streams_chunks_into_a_live_mp4(pipe, tmp_path):
    out = tmp_path / "live.mp4"
    seen, partials = [], []

    def on_chunk(chunk):  # the file is readable while it grows: all frames but the newest (muxer latency)
        written = chunk.timing.first_frame + chunk.frames.shape[0]
        assert not out.exists()
        partials.extend(tmp_path.glob(".live.*.partial.mp4"))  # a temporary name unique to the run
        seen.append((written, readable_frames(partials[-1], written - 1)))

    traces = pipe.traces
    result = stream(pipe, out=out, progress=on_chunk)
    assert [c.frames for c in result.chunks] == [9, 8, 8, 8] and result.frames == 33
    assert read_video(out).shape == (33, H, W, 3) and len(set(partials)) == 1 and not partials[0].exists()
    assert all(n >= written - 1 for written, n in seen) and seen[-1][1] >= 32
    # compiled for the first chunk (one frame longer) and the second, never after
    assert not any(c.traced for c in result.chunks[2:])
    assert [c.first_frame for c in result.chunks] == [0, 9, 17, 25]
    assert 0 < result.time_to_first_frame_s <= result.total_s and result.fps > 0
    assert result.steady_fps > 0 and result.state_bytes > 0 and not result.interrupted
    again = stream(pipe, num_chunks=5)  # no file; the same shapes: nothing new to compile
    assert again.frames == 41 and not any(c.traced for c in again.chunks)
    assert pipe.traces - traces <= 7  # init, 2 chunk steps, 2 uint8, 2 decoder (1st use)


def test_ctrl_c_keeps_a_valid_file(pipe, tmp_path):
    out = tmp_path / "stopped.mp4"

    def interrupt(chunk):
        if chunk.index == 1:
            raise KeyboardInterrupt

    result = stream(pipe, num_chunks=6, out=out, progress=interrupt)
    assert result.interrupted and len(result.chunks) == 2 and result.frames == 17
    assert result.path == out and read_video(out).shape == (17, H, W, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["stopped.mp4"]  # no temporary left


def test_streaming_wan_decode_equals_whole_clip_decode(pipe):
    chunks = collect(pipe, num_chunks=3, seed=5)
    latents = jnp.concatenate([c.latents for c in chunks], axis=1)
    frames = np.concatenate([c.frames for c in chunks])
    whole = pipe.vae.decode(latents)  # every frame at once (eager: no new executable to compile)
    assert whole.shape[1] == frames.shape[0] == 1 + 4 * 3 * CHUNK
    decoder = pipe.decoder  # the pipeline's own streaming decoder, float output
    decoder.reset()
    streamed = jnp.concatenate([decoder.push(c.latents) for c in chunks], axis=1)
    assert float(jnp.max(jnp.abs(streamed - whole))) <= 1e-5
    assert np.max(np.abs(frames.astype(int) - to_uint8(whole)[0].astype(int))) <= 1  # uint8 on device: same rounding


def test_memory_is_flat_in_stream_length(pipe):
    marks = {}

    def on_chunk(chunk):
        if chunk.index in (3, 30):  # one chunk in flight behind each
            live = sum(a.nbytes for a in jax.live_arrays())
            memory = pipe.chunk_step_memory(chunk.state_spec, latent_frames=CHUNK, height=H, width=W)
            marks[chunk.index] = (chunk.timing.state_bytes, live, memory["temp_bytes"])
        del chunk

    result = stream(pipe, num_chunks=32, progress=on_chunk)
    assert result.frames == 1 + 4 * 32 * CHUNK and not any(c.traced for c in result.chunks[2:])
    (state4, live4, temp4), (state32, live32, temp32) = marks[3], marks[30]
    assert state4 == state32 == result.state_bytes
    assert temp4 == temp32 > 0  # the same executable: compiled temp memory does not grow
    assert live32 == live4  # nothing accumulates on the device


def test_prompt_switch_changes_only_later_chunks(pipe):
    base = collect(pipe, seed=3)
    switched = collect(pipe, seed=3, prompts_at={2: OTHER})
    for c in (0, 1):
        np.testing.assert_array_equal(switched[c].frames, base[c].frames)
        np.testing.assert_array_equal(switched[c].latents, base[c].latents)
    for c in (2, 3):
        assert float(jnp.max(jnp.abs(switched[c].latents - base[c].latents))) > 1e-3
    # the prompt itself matters from the start too (and the same seed repeats exactly)
    assert float(jnp.max(jnp.abs(collect(pipe, seed=3, prompt=OTHER)[0].latents - base[0].latents))) > 1e-3
    np.testing.assert_array_equal(collect(pipe, seed=3)[3].frames, base[3].frames)


@pytest.mark.slow
def test_sliding_window(pipe):
    """``window=1``: a ring of one chunk state (new state shapes: compiles the chunk steps again, ~20 s)."""
    windowed = collect(pipe, seed=3, window=1)  # the first two chunks see the same past either way
    base = collect(pipe, seed=3)
    np.testing.assert_array_equal(windowed[1].latents, base[1].latents)
    assert float(jnp.max(jnp.abs(windowed[3].latents - base[3].latents))) > 1e-6


def test_pipeline_is_the_streaming_dit_sampler_written_out(pipe):
    """The pipeline's chunk latents are LongSANA's sampler looped by hand with the package's ``StreamingDiT``: a
    step call per timestep, ``renoise_step`` with the documented noise keys, then the committing pass."""
    chunks = collect(pipe, num_chunks=2, seed=7)
    text, mask = pipe._encode(PROMPT)
    dit, sched = pipe.dit, pipe.schedule
    k = renoise_coefficients(sched.sigmas)
    state = dit.init_state(text, mask, height=H // 8, width=W // 8)
    key = jax.random.key(7)
    for c, chunk in enumerate(chunks):
        shape, chunk_key = chunk.latents.shape, jax.random.fold_in(key, c)
        x = jax.random.normal(jax.random.fold_in(chunk_key, 0), shape, jnp.float32)
        for i, t in enumerate(sched.timesteps):
            v, _ = dit(state, x, t)
            eps = jax.random.normal(jax.random.fold_in(chunk_key, i + 1), shape, jnp.float32)
            x = renoise_step(x, v.astype(jnp.float32), eps, {name: a[i] for name, a in k.items()})
        _, state = dit(state, x, 0.0, commit=True)
        assert max_rel_err(chunk.latents, x) <= 1e-5


def test_check_needs_no_weights(folder, tmp_path):
    import sana_jax

    request = StreamingPipeline.check(folder, num_chunks=3, chunk_frames=CHUNK, width=W, prompts_at={2: OTHER})
    assert request.chunks == (3, 2, 2) and (request.height, request.width) == (480, W)  # the checkpoint's height
    for bad in ({"height": H + 8}, {"window": 0}, {"prompts_at": {3: OTHER}}, {"num_chunks": 0}):
        with pytest.raises(InputError):
            StreamingPipeline.check(folder, **{"num_chunks": 3, **bad})
    default_model = Path(sana_jax.__file__).parent / "default_model"  # its PatchVAE streams; its size is 64 × 64
    small = StreamingPipeline.check(default_model, num_chunks=1)
    assert (small.height, small.width) == (64, 64)


def test_bad_input(pipe):
    with pytest.raises(InputError, match="multiple of 16"):
        stream(pipe, height=H + 8)
    with pytest.raises(InputError, match="window"):
        stream(pipe, window=0)
    with pytest.raises(InputError, match="out= or writer="):
        stream(pipe, out="a.mp4", writer=object())
    with pytest.raises(InputError, match="streaming decoder"):
        StreamingPipeline(pipe.transformer, object())
    image = np.zeros((H, W, 3), np.uint8)
    with pytest.raises(InputError, match="resize"):
        stream(pipe, image=np.zeros((H, W + 8, 3), np.uint8))
    with pytest.raises(InputError, match="frame count must be 1 \\+ 4·k"):
        stream(pipe, video=np.zeros((8, H, W, 3), np.uint8))
    with pytest.raises(InputError, match="not both"):
        stream(pipe, image=image, video=image[None])
    with pytest.raises(InputError, match="takes no options"):
        StreamingPipeline(pipe.transformer, pipe.vae, decode_options={"overlap": 1})  # Wan's decode is exact


def test_cli_stream(pipe, folder, tmp_path, monkeypatch, capsys):
    from sana_jax import cli

    # the CLI's own load would compile everything again: hand it the module's pipeline
    monkeypatch.setattr(StreamingPipeline, "from_pretrained", classmethod(lambda cls, *a, **k: pipe))
    out = tmp_path / "cli.mp4"
    assert cli.main(["stream", PROMPT, "--model", str(folder), "--seconds", "1", "--chunk-frames", str(CHUNK),
                     "--height", str(H), "--width", str(W), "--switch", "1:" + OTHER, "--out", str(out), "-q"]) == 0
    assert read_video(out).shape == (17, H, W, 3)  # 1 s at 16 fps → 17 frames (1 + 4k)
    printed = capsys.readouterr().out
    assert "time to first frame" in printed and "FPS" in printed and "wrote" in printed
    out = tmp_path / "refused.mp4"  # a new path: the refusals below are not for an existing --out
    assert cli.main(["stream", PROMPT, "--model", str(folder), "--height", "30", "--out", str(out), "-q"]) == 2
    assert cli.main(["stream", PROMPT, "--model", str(folder), "--seconds", "1", "--chunk-frames", str(CHUNK),
                     "--switch", "oops", "--out", str(out), "-q"]) == 2


@pytest.mark.slow
def test_ltx2_streams_with_overlapping_windows(tmp_path):
    """LTX-2 (non-causal decoder): each chunk decoded with the previous overlap + 1 latent frames, the first one's
    frame dropped, the overlap cross-faded with the held-back frames; compared with that recipe written out."""
    build(tmp_path / "ltx", "ltx2")
    pipe = StreamingPipeline.from_pretrained(tmp_path / "ltx", decode_options={"overlap": 1})
    h, w = 64, 96
    out = tmp_path / "ltx.mp4"
    result = pipe.stream(PROMPT, num_chunks=3, chunk_frames=CHUNK, height=h, width=w, out=out, progress=False)
    assert [c.frames for c in result.chunks] == [1 + 8 * 1, 8 * 2, 8 * 3]  # 8 frames held back, then flushed
    assert read_video(out).shape == (1 + 8 * 3 * CHUNK, h, w, 3)
    assert not any(c.traced for c in result.chunks[2:])

    chunks = collect(pipe, num_chunks=3, height=h, width=w)
    z = jnp.concatenate([c.latents for c in chunks], axis=1)  # latent chunks [0, 3), [3, 5), [5, 7)
    frames = np.concatenate([c.frames for c in chunks])

    def decode(a, b):  # the window decode itself is LTX2VAE.decode (tested against diffusers elsewhere)
        return np.array(pipe.decoder._window(pipe.decoder.params, z[:, a:b]))[0]

    ramp = ((np.arange(8) + 0.5) / 8)[:, None, None, None]
    first = decode(0, 3)  # 17 frames: emit 9, hold 8
    second = decode(1, 5)[1:]  # anchor latent 1, overlap latent 2, new latents 3, 4
    third = decode(3, 7)[1:]
    second[:8] = ramp * second[:8] + (1 - ramp) * first[9:]
    third[:8] = ramp * third[:8] + (1 - ramp) * second[16:]
    want = to_uint8(np.concatenate([first[:9], second[:16], third]))
    assert frames.shape == want.shape
    assert np.max(np.abs(frames.astype(int) - want.astype(int))) <= 1


def test_loads_a_longsana_folder(pipe, folder, tmp_path, monkeypatch):
    """LongSANA's diffusers folder names its transformer ``SanaVideoCausalTransformer3DModel`` (same weights)."""
    import json
    import shutil

    import converters.loader

    copy = tmp_path / "longsana"
    shutil.copytree(folder, copy)
    for path, key in ((copy / "transformer" / "config.json", None), (copy / "model_index.json", "transformer")):
        cfg = json.loads(path.read_text())
        if key is None:
            cfg["_class_name"] = "SanaVideoCausalTransformer3DModel"
        else:
            cfg[key][1] = "SanaVideoCausalTransformer3DModel"
        path.write_text(json.dumps(cfg))
    by_class = dict(converters.loader.BY_CLASS)
    by_class.setdefault("SanaVideoCausalTransformer3DModel", by_class["SanaVideoTransformer3DModel"])
    monkeypatch.setattr(converters.loader, "BY_CLASS", by_class)
    loaded = StreamingPipeline.from_pretrained(copy)
    same = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), loaded.dit.params, pipe.dit.params)
    assert all(jax.tree.leaves(same))


class Frames:
    """A writer keeping what it is given."""

    def __init__(self):
        self.frames = []

    def append(self, frames):
        self.frames.append(np.asarray(frames))

    def all(self):
        return np.concatenate(self.frames)


def start_clip(frames: int) -> np.ndarray:
    rng = np.random.default_rng(5)
    return rng.integers(0, 256, (frames, H, W, 3), dtype=np.uint8)


def test_image_start_commits_its_latent_first(pipe):
    """``image=``: the image's latent is committed (the clean t = 0 pass) before chunk 0, and it is the video's
    first frame; chunk 0 is then the sampler on that state."""
    image = start_clip(1)[0]
    writer = Frames()
    result = stream(pipe, num_chunks=2, image=image, writer=writer, seed=4)
    video = writer.all()
    np.testing.assert_array_equal(video[0], image)
    assert result.frames == video.shape[0] == 1 + 4 * CHUNK + 4 * CHUNK  # chunks (2, 2): the image is the 1 in 1 + 2·2

    chunks = collect(pipe, num_chunks=2, image=image, seed=4)
    context = pipe.encode_context(image, height=H, width=W)
    assert context.shape == (1, 1, H // 8, W // 8, pipe.transformer.config.in_channels)
    text, mask = pipe._encode(PROMPT)
    state = pipe.dit.init_state(text, mask, height=H // 8, width=W // 8)
    _, state = pipe.dit(state, context, 0.0, commit=True)
    want, _ = pipe.dit.sample_chunk(state, jax.random.key(4), 0, pipe.schedule, shape=chunks[0].latents.shape)
    assert max_rel_err(chunks[0].latents, want) <= 1e-5
    fresh = pipe.dit.init_state(text, mask, height=H // 8, width=W // 8)
    plain, _ = pipe.dit.sample_chunk(fresh, jax.random.key(4), 0, pipe.schedule, shape=chunks[0].latents.shape)
    assert float(jnp.max(jnp.abs(plain - chunks[0].latents))) > 1e-4  # the start is seen


def test_video_extension_keeps_the_clip_then_continues(pipe):
    """``video=``: the clip's frames come first, unchanged; its latents are committed chunk by chunk and the Wan
    decoder's causal cache continues from them (later chunks give 4 frames per latent frame)."""
    clip = start_clip(1 + 4 * 2)  # 3 latent frames
    writer = Frames()
    result = stream(pipe, num_chunks=2, video=clip, writer=writer)
    video = writer.all()
    np.testing.assert_array_equal(video[:clip.shape[0]], clip)
    assert [c.frames for c in result.chunks] == [4 * CHUNK, 4 * CHUNK]  # continuations, no first frame
    assert video.shape[0] == clip.shape[0] + 4 * 2 * CHUNK


def test_cli_stream_from_an_image(pipe, folder, tmp_path, monkeypatch):
    from PIL import Image

    from sana_jax import cli

    monkeypatch.setattr(StreamingPipeline, "from_pretrained", classmethod(lambda cls, *a, **k: pipe))
    Image.fromarray(start_clip(1)[0][:, ::2]).save(tmp_path / "first.png")  # half as wide: resized
    out = tmp_path / "from_image.mp4"
    assert cli.main(["stream", PROMPT, "--model", str(folder), "--seconds", "1", "--chunk-frames", str(CHUNK),
                     "--height", str(H), "--width", str(W), "--image", str(tmp_path / "first.png"), "--out",
                     str(out), "-q"]) == 0
    assert read_video(out).shape == (17, H, W, 3)  # 1 s at 16 fps, the image its first frame
    assert cli.main(["stream", PROMPT, "--model", str(folder), "--image", str(tmp_path / "none.png"),
                     "--height", str(H), "--width", str(W), "--out", str(tmp_path / "refused.mp4"), "-q"]) == 2

"""CausVid distillation of a tiny Wan2.1 teacher into a Wan causal student: the rollout with every exit at the last
step is the student's streaming inference, the chunk-wise ODE loss equals the one-shot block-causal forward, the
three phases give finite losses and nonzero gradients, bad pairings are refused, and ``sana-jax train distill
--teacher <Wan folder>`` writes a student folder that ``StreamingPipeline.from_wan`` streams."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sana_jax.distill.config import DistillConfig
from sana_jax.distill.data import DistillData, make_ode_pairs
from sana_jax.distill.families import SANA, WAN, causal_ops
from sana_jax.distill.rollout import causal_ode_loss, self_forcing_rollout
from sana_jax.distill.trainer import DistillTrainer
from sana_jax.errors import InputError
from sana_jax.models import sana_video_causal as sc
from sana_jax.models import wan_causal as wc
from sana_jax.sampling import longsana_schedule
from tests.wan_folders import TEXT_DIM, tiny_models, tiny_wan_folder

B, T, H, W, C = 2, 4, 4, 4, 16  # 4 latent frames in aligned chunks of 2
CHUNK = 2
SCHEDULE = longsana_schedule((1000.0, 750.0, 500.0))
TIMESTEPS, COEFFICIENTS = sc.renoise_inputs(SCHEDULE)
N = len(TIMESTEPS)


@pytest.fixture(scope="module")
def dit():
    return tiny_models()[0]


@pytest.fixture(scope="module")
def text():
    rng = np.random.default_rng(1)
    text = rng.standard_normal((B, 6, TEXT_DIM)).astype(np.float32)
    text[0, 4:] = 0  # zero-padded, as UMT5 contexts are
    return jnp.asarray(text)


def test_family(dit):
    assert causal_ops(dit) is WAN and WAN.chunks(21, 3) == (3,) * 7 and SANA.chunks(5, 2) == (3, 2)
    with pytest.raises(InputError, match="multiple of 3"):
        WAN.chunks(20, 3)


def test_rollout_exiting_last_is_streaming_inference(dit, text):
    key = jax.random.key(3)
    state = WAN.init_state(dit, text, None, latent_shape=(T, H, W, C))
    video, state = jax.jit(lambda k: self_forcing_rollout(
        dit, state, k, jnp.asarray(TIMESTEPS), COEFFICIENTS, jnp.full((T // CHUNK,), N - 1), shape=(B, T, H, W, C),
        chunk=CHUNK, step_fn=WAN.step))(key)
    stream = wc.StreamingDiT(dit, donate=False)
    ref_state = stream.init_state(text, height=H, width=W, frames=T)
    chunks = []
    for c in range(T // CHUNK):
        x, ref_state = stream.sample_chunk(ref_state, key, c, SCHEDULE, shape=(B, CHUNK, H, W, C))
        chunks.append(x)
    np.testing.assert_allclose(video, jnp.concatenate(chunks, axis=1), rtol=0, atol=1e-5)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(ref_state)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_causal_ode_loss_is_the_block_causal_forward(dit, text):
    """Chunk 0 from its noisy point with no past; chunk 1 from its noisy point reading chunk 0's clean endpoint
    from the KV cache — wan_causal.causal_forward of the whole clip, chunk 0 at t = 0, gives the same."""
    rng = np.random.default_rng(2)
    sigmas = SCHEDULE.sigmas[:-1]
    trajectory = jnp.asarray(rng.standard_normal((B, N + 1, T, H, W, C)), jnp.float32)
    key = jax.random.key(9)
    state = WAN.init_state(dit, text, None, latent_shape=(T, H, W, C))
    loss = jax.jit(lambda: causal_ode_loss(dit, state, trajectory, sigmas, jnp.asarray(TIMESTEPS), key,
                                           chunk=CHUNK, step_fn=WAN.step))()

    idx = [np.asarray(jax.random.randint(jax.random.fold_in(key, k), (B,), 0, N)) for k in range(2)]
    pick = lambda i, sl: trajectory[np.arange(B), i][:, sl]  # noqa: E731
    first, second = slice(0, CHUNK), slice(CHUNK, T)
    x_a = jnp.concatenate([pick(idx[0], first), pick(idx[1], second)], axis=1)
    x_b = jnp.concatenate([trajectory[:, -1, first], pick(idx[1], second)], axis=1)
    t_a = jnp.concatenate([jnp.repeat(TIMESTEPS[idx[0]][:, None], CHUNK, 1),
                           jnp.repeat(TIMESTEPS[idx[1]][:, None], CHUNK, 1)], axis=1)
    t_b = t_a.at[:, first].set(0.0)
    forward = jax.jit(lambda x, t: wc.causal_forward(dit, x, text, t, chunk=CHUNK))
    v_a, v_b = forward(x_a, t_a), forward(x_b, t_b)
    sig = lambda i: jnp.asarray(sigmas)[i].reshape(B, 1, 1, 1, 1)  # noqa: E731
    x0_first = x_a[:, first] - sig(idx[0]) * v_a[:, first]
    x0_second = x_b[:, second] - sig(idx[1]) * v_b[:, second]
    want = (jnp.sum((x0_first - trajectory[:, -1, first]) ** 2) +
            jnp.sum((x0_second - trajectory[:, -1, second]) ** 2)) / trajectory[:, 0].size
    np.testing.assert_allclose(loss, want, rtol=1e-5)


# The run of the CLI test below: the trainer test trains with the same settings and shapes, so that the CLI finds
# every program compiled (XLA's persistent cache, tests/conftest.py): 13 frames = 4 latent frames, 32×32 px = 4×4;
# one critic update per generator update, so that every DMD step is a generator step (which updates the critic
# too): one program fewer to compile
RUN = ["--steps", "2", "--ode-pairs", "2", "--ode-steps", "1", "--frames", "13", "--height", "32", "--width", "32",
       "--chunk-frames", str(CHUNK), "--student-steps", "2", "--critic-updates", "1", "--batch-size", "2", "-q"]


def run_config() -> DistillConfig:
    from sana_jax.cli import build_parser
    from sana_jax.commands.distill import config_from

    args = build_parser().parse_args(["train", "distill", "--teacher", "-", "--prompts", "-", "--out", "-", *RUN])
    return config_from(args, 3.0)  # the tiny folder has no guidance of its own


CONFIG = run_config()


def test_every_phase_trains(dit):
    """ODE pairs from the Wan teacher (no mask passed), then one ODE step and one DMD step (the generator's loss,
    then the critic's): finite losses, nonzero gradients, and the student's weights move."""
    rng = np.random.default_rng(0)
    prompts = rng.standard_normal((2, 512, TEXT_DIM)).astype(np.float32)
    null = np.zeros((1, 512, TEXT_DIM), np.float32)
    ones = np.ones((2, 512), np.int32)
    trainer = DistillTrainer(dit, CONFIG, latent_shape=(T, H, W, C))
    assert trainer.chunks == (2, 2) and trainer.ops is WAN
    pairs = make_ode_pairs(dit, prompts, ones, null, ones[:1], count=2, latent_shape=trainer.latent_shape,
                           student_sigmas=trainer.student_sigmas, guidance_scale=CONFIG.guidance_scale,
                           substeps=CONFIG.ode_substeps, batch_size=2, progress=False)
    assert np.all(np.isfinite(pairs.latents))
    data = DistillData(pairs, CONFIG.ode_steps)
    state = trainer.init_state()
    initial = {n: np.asarray(v) for n, v in state["student"].items()}
    seen = []
    for step in range(2):
        state, metrics = trainer.step(state, data.batch(step, CONFIG.batch_size, CONFIG.seed), step)
        seen.append((trainer.phase(step), {k: float(v) for k, v in metrics.items()}))
    assert [p for p, _ in seen] == ["ode", "generator"]
    for phase, metrics in seen:
        assert all(np.isfinite(v) for v in metrics.values()), (phase, metrics)
    assert seen[0][1]["grad_norm"] > 0 and seen[1][1]["grad_norm"] > 0
    assert seen[1][1]["critic_grad_norm"] > 0 and seen[1][1]["dmd_grad_abs"] > 0
    assert max(float(np.abs(np.asarray(state["student"][n]) - initial[n]).max()) for n in initial) > 0


def test_refused_pairings(dit):
    from flax import nnx

    from sana_jax.models.sana_video import SanaVideoTransformer
    from tests.helpers import tiny_config

    sana = nnx.eval_shape(lambda: SanaVideoTransformer(tiny_config(), rngs=nnx.Rngs(0)))  # shapes only
    with pytest.raises(InputError, match="Wan2.1 teacher distils into a Wan2.1 student"):
        DistillTrainer(dit, CONFIG, latent_shape=(T, H, W, C), student=sana)
    with pytest.raises(InputError, match="multiple of 2"):
        DistillTrainer(dit, CONFIG, latent_shape=(5, H, W, C))


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    from sana_jax.cli import main

    tmp = tmp_path_factory.mktemp("wan_distill")
    teacher = tiny_wan_folder(tmp / "teacher")
    (tmp / "prompts.txt").write_text("a cat surfing\na red circle moving left\n")
    assert main(["train", "distill", "--teacher", str(teacher), "--prompts", str(tmp / "prompts.txt"), "--out",
                 str(tmp / "run"), *RUN]) == 0
    return tmp


def test_cli_writes_a_wan_student_that_streams(distilled):
    from sana_jax.pipelines.streaming import StreamingPipeline
    from sana_jax.pipelines.wan_components import WanFolder

    pipeline = distilled / "run" / "pipeline"
    index = json.loads((pipeline / "model_index.json").read_text())
    assert index["_class_name"] == "WanPipeline"
    assert index["_sana_jax"]["stream"] == {"chunk_frames": 2, "timesteps": [1000.0, 500.0], "shift": 7.0,
                                            "window": 1}  # 13 frames → 4 latent frames → chunks (2, 2)
    assert json.loads((distilled / "run" / "ode_pairs" / "cache.json").read_text())["latent_shape"] == \
        [3, 4, 4, 4, 16]
    metrics = [json.loads(ln) for ln in (distilled / "run" / "metrics.jsonl").read_text().splitlines()]
    assert metrics and all(np.isfinite(m["loss"]) for m in metrics)
    assert WanFolder.open(pipeline).layout == "diffusers"

    pipe = StreamingPipeline.from_wan(pipeline)
    assert pipe.chunk_frames == 2 and list(pipe.schedule.timesteps) == [1000.0, 500.0]
    result = pipe.stream("a cat surfing", num_chunks=2, height=32, width=32, progress=False)
    assert len(result.chunks) == 2 and result.latent_frames == 4 and result.frames == 13


def test_cli_bad_wan_request(distilled, capsys):
    from sana_jax.cli import main

    base = ["train", "distill", "--teacher", str(distilled / "teacher"), "--prompts", str(distilled / "prompts.txt"),
            "--out", str(distilled / "bad"), "--steps", "1", "--height", "32", "--width", "32"]
    assert main([*base, "--frames", "17"]) == 2  # 5 latent frames: not chunks of 3
    assert "nearest valid --frames 9 or 21" in capsys.readouterr().err
    assert not (distilled / "bad" / "pipeline").exists()


def test_original_layout_teacher_gives_a_diffusers_student(tmp_path, dit):
    """From an original-layout folder the student folder holds exported parts, not links to .pth files."""
    from sana_jax.distill.teachers import open_teacher
    from sana_jax.pipelines.streaming import StreamingPipeline

    teacher = open_teacher(str(tiny_wan_folder(tmp_path / "orig", layout="original")), frames=13, height=32,
                           width=32, chunk_frames=CHUNK)
    assert teacher.latent_shape == (T, H, W, C)
    text, mask, null, null_mask = teacher.encode(["a cat", "a dog on the sea"])
    assert text.shape == (2, 512, TEXT_DIM) and null.shape == (1, 512, TEXT_DIM) and mask.all()
    assert not text[0, 8:].any() and null[0, 1:].sum() == 0  # zero-padded rows ("" is one token: </s>)
    out = teacher.write_student(tmp_path / "student", dit, {"chunk_frames": CHUNK, "timesteps": [1000.0, 500.0],
                                                           "shift": 7.0, "window": 1})
    assert not (out / "text_encoder").is_symlink() and not (out / "vae").is_symlink()
    result = StreamingPipeline.from_wan(out).stream("a cat", num_chunks=2, height=32, width=32, progress=False)
    assert result.latent_frames == T  # the CLI test's stream: the same programs

    with pytest.raises(InputError, match="nearest valid --frames 9 or 21"):
        open_teacher(str(tmp_path / "orig"), frames=13, height=32, width=32, chunk_frames=3)

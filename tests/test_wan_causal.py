"""The block-causal Wan DiT: one-shot form against diffusers' Wan modules under a dense block-causal mask, the
KV-cached chunk step against the one-shot form (plain cache and rolling window with sink), flat memory, prompt
switches, bf16 throughout."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.parity import check, reference, save_and_load, torch
from tests.test_wan_transformer import tiny_kwargs

from sana_jax.models import wan_causal  # noqa: E402
from sana_jax.sampling.schedules import causvid_schedule  # noqa: E402

THW = (7, 4, 6)  # 7 latent frames: chunks (3, 2, 2) with chunk=2 (remainder first), or 3+3+1 explicit


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from diffusers import WanTransformer3DModel

    ref = reference(WanTransformer3DModel, **tiny_kwargs(num_layers=3))
    model = save_and_load(ref, tmp_path_factory.mktemp("wan") / "transformer")
    rng = np.random.default_rng(3)
    latents = rng.standard_normal((2, *THW, 4)).astype(np.float32)
    text = rng.standard_normal((2, 9, 4096)).astype(np.float32)
    text[1, 4:] = 0
    timestep = rng.uniform(0, 1000, (2, THW[0])).astype(np.float32)  # per frame, as in diffusion forcing
    return ref, model, (latents, text, timestep)


def masked_reference(ref, latents, text, per_frame, visible):
    """diffusers' WanTransformer3DModel with the frame-level ``visible`` mask on every self-attention."""
    from diffusers.models.transformers.transformer_wan import WanAttnProcessor

    per_token = visible.shape[0] and latents.shape[2] * latents.shape[3] // 4  # patch 2×2
    mask = torch.from_numpy(np.repeat(np.repeat(visible, per_token, 0), per_token, 1))

    class Masked(WanAttnProcessor):
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
            return super().__call__(attn, hidden_states, encoder_hidden_states, mask, rotary_emb)

    saved = [block.attn1.processor for block in ref.blocks]
    try:
        for block in ref.blocks:
            block.attn1.set_processor(Masked())
        with torch.no_grad():
            out = ref(torch.from_numpy(latents).permute(0, 4, 1, 2, 3),
                      torch.from_numpy(np.repeat(per_frame, per_token, axis=1)), torch.from_numpy(text)).sample
    finally:
        for block, processor in zip(ref.blocks, saved):
            block.attn1.set_processor(processor)
    return out.permute(0, 2, 3, 4, 1).numpy()


WINDOWS = {"all": {}, "window+sink": {"cache_frames": 3, "sink_frames": 1}, "window": {"cache_frames": 2}}


@pytest.mark.parametrize("window", list(WINDOWS))
def test_one_shot_equals_diffusers_under_block_causal_mask(pair, window):
    ref, model, (latents, text, timestep) = pair
    sizes = (3, 2, 2)
    visible = wan_causal.frame_visibility(sizes, **WINDOWS[window])
    ours = wan_causal.causal_forward(model, latents, text, timestep, chunk=sizes, **WINDOWS[window])
    check(ours, masked_reference(ref, latents, text, timestep, visible), what=window)


def test_frame_visibility_is_the_ring_cache():
    """Chunks of 2: with cache 4 / sink 1 the chunk at frames 8–9 sees frame 0, frames 5–7 and itself."""
    visible = wan_causal.frame_visibility((2,) * 5, cache_frames=4, sink_frames=1)
    assert np.flatnonzero(visible[8]).tolist() == [0, 5, 6, 7, 8, 9]
    assert np.flatnonzero(visible[1]).tolist() == [0, 1]
    assert not wan_causal.frame_visibility((2, 2))[0, 2]


def stream_chunks(model, latents, text, timestep, sizes, cache_frames, sink_frames=0, dit=None):
    """Each chunk's velocity from the cached step (commit with the same inputs the one-shot form sees)."""
    dit = dit or wan_causal.StreamingDiT(model, donate=False)
    state = dit._init(dit.params, jnp.asarray(text), None, height=latents.shape[2], width=latents.shape[3],
                      cache_frames=cache_frames, sink_frames=sink_frames)
    out, start = [], 0
    for n in sizes:
        chunk, t = latents[:, start:start + n], timestep[:, start:start + n]
        v, _ = dit(state, chunk, t)
        v2, state = dit(state, chunk, t, commit=True)
        np.testing.assert_array_equal(np.asarray(v), np.asarray(v2))  # the commit pass sees what denoising saw
        out.append(np.asarray(v))
        start += n
    return np.concatenate(out, axis=1), state


@pytest.mark.parametrize("window", list(WINDOWS))
def test_cached_chunks_equal_one_shot(pair, window):
    _, model, (latents, text, timestep) = pair
    sizes = (3, 2, 2)
    options = WINDOWS[window]
    cache = options.get("cache_frames", sum(sizes))
    streamed, state = stream_chunks(model, latents, text, timestep, sizes, cache, options.get("sink_frames", 0))
    one_shot = wan_causal.causal_forward(model, latents, text, timestep, chunk=sizes, **options)
    check(streamed, one_shot, tol=1e-5, what=window)
    assert int(state.frame) == sum(sizes)


def test_rolling_window_memory_is_flat(pair):
    """30 chunks through a 1-chunk window + 1-chunk sink: one executable, the same state bytes and the same
    compiled temp memory at chunk 4 and chunk 30."""
    _, model, (_, text, _) = pair
    dit = wan_causal.StreamingDiT(model, donate=False)
    sched = causvid_schedule()
    shape = (2, 2, 4, 6, 4)
    state = dit.init_state(jnp.asarray(text), height=4, width=6, window=1, sink=1, chunk_frames=2)
    key = jax.random.key(0)
    sizes, temps = [], {}
    for c in range(30):
        if c in (4, 29):
            lowered = dit.lower_chunk(state, key, c, sched, shape=shape)
            temps[c] = lowered.compile().memory_analysis().temp_size_in_bytes
        x, state = dit.sample_chunk(state, key, c, sched, shape=shape)
        sizes.append(state.nbytes)
        if c == 0:
            traces = dit.traces
    assert dit.traces == traces
    assert len(set(sizes)) == 1 and temps[4] == temps[29]
    assert np.isfinite(np.asarray(x)).all()
    assert sorted(np.asarray(state.slot_frame).tolist()) == [0, 1, 58, 59]  # sink chunk 0, then the last chunk


def test_prompt_switch_changes_only_later_chunks(pair):
    _, model, (_, text, _) = pair
    dit = wan_causal.StreamingDiT(model, donate=False)
    sched = causvid_schedule()
    shape = (2, 2, 4, 6, 4)
    key = jax.random.key(1)
    other = jnp.asarray(text[::-1].copy())

    def run(switch_at):
        state = dit.init_state(jnp.asarray(text), height=4, width=6, frames=8)
        out = []
        for c in range(4):
            if c == switch_at:
                state = dit.set_prompt(state, other)
            x, state = dit.sample_chunk(state, key, c, sched, shape=shape)
            out.append(np.asarray(x))
        return out

    plain, switched = run(None), run(2)
    for c in (0, 1):
        np.testing.assert_array_equal(plain[c], switched[c])
    for c in (2, 3):
        assert np.abs(plain[c] - switched[c]).max() > 1e-3


def test_bf16_throughout(pair, tmp_path):
    """The causal checkpoints run in bf16 everywhere (time embedding and modulation too): the cache is bf16 and
    the result stays near float32's."""
    import converters

    _, model, (latents, text, timestep) = pair
    converters.export_safetensors(model, tmp_path / "t")
    bf16 = converters.load(tmp_path / "t", dtype=jnp.bfloat16)
    bf16.set_float32_conditioning(False)
    e0, _ = bf16.embed_timestep(jnp.asarray(timestep), 2, THW[0])
    assert e0.dtype == jnp.bfloat16
    streamed, state = stream_chunks(bf16, latents, text, timestep, (3, 2, 2), 7)
    assert state.k.dtype == jnp.bfloat16
    want = wan_causal.causal_forward(model, latents, text, timestep, chunk=(3, 2, 2))
    check(streamed.astype(np.float32), want, tol=0.05, what="bf16")


def test_student_schedules():
    """CausVid's and Self-Forcing's per-chunk timesteps and σ, as their configs and wrappers give them
    (tianweiy/CausVid:configs/*.yaml, guandeh17/Self-Forcing:configs/self_forcing_dmd.yaml)."""
    from sana_jax.sampling.schedules import self_forcing_schedule, warp_timesteps

    causvid = causvid_schedule()
    np.testing.assert_allclose(causvid.timesteps, [1000, 757, 522])
    np.testing.assert_allclose(causvid.sigmas, [1.0, 0.75676, 0.52174, 0.0], atol=1e-5)
    np.testing.assert_allclose(self_forcing_schedule().timesteps, [1000, 937.5, 833.333, 625.0], atol=1e-3)
    # CausVid's warped 4-step config (wan_causal_dmd_warp_4step_cfg2.yaml, shift 8)
    np.testing.assert_allclose(warp_timesteps([1000, 750, 500, 250], 8.0), [1000, 960.0, 888.889, 727.273],
                               atol=1e-3)

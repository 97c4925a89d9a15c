"""Block-causal (streaming) SANA-Video DiT: LongSANA's chunk-causal forward, one-shot and incremental.

References: ``NVlabs/Sana:diffusion/model/nets/sana_blocks.py`` (``ChunkCausalAttention``,
``CachedCausalAttention``), ``NVlabs/Sana:diffusion/model/nets/basic_modules.py`` (``CachedGLUMBConvTemp``),
``NVlabs/Sana:diffusion/scheduler/longlive_flow_euler_sampler.py``; docs/streaming.md. Same parameters as
:class:`~sana_jax.models.sana_video.SanaVideoTransformer` (the same checkpoint means the same thing); only the
token mixing across time changes. Frames are split into chunks (LongSANA: 10 latent frames, remainder in the first):

* linear self-attention is bidirectional inside a chunk and causal across chunks: chunk k reads the state
  S = Σ R(φ(k)) vᵀ, z = Σ φ(k) of chunks [k − window, k) plus its own (``window=None``: all earlier chunks);
* the FFN's temporal conv (kernel 3) sees, at a chunk's first frame, the previous chunk's last frame of the
  pre-conv features (``CachedGLUMBConvTemp``'s tail) and, at a chunk's last frame, zeros (never the next chunk).

Two equivalent forms:

* :func:`causal_forward` — one pass over a whole clip (per-frame timesteps allowed; training / reference);
* :func:`init_state` + :func:`step` — one chunk at a time with a constant-size state. Denoising calls use
  ``commit=False`` (state untouched); the clean t = 0 pass uses ``commit=True`` and returns the next state.
  :class:`StreamingDiT` jits the step (params as an argument, offset traced, the state donated on commit) so a
  fixed chunk size compiles once.

LongSANA's sampler (``LongLiveFlowEuler``) per chunk, CFG 1, written out with the step:

    sched = longsana_schedule()                  # timesteps [1000, 960, 889, 727], sigmas σ0..σ3 + a final 0
    k = renoise_coefficients(sched.sigmas)       # σ_i and σ_{i+1} per step (sana_jax.sampling.solvers)
    dit = StreamingDiT(model)
    state = dit.init_state(text, text_mask, height=h, width=w)          # the prompt's K/V, computed once
    for c in range(num_chunks):
        x = jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, c), 0), shape)
        for i, t in enumerate(sched.timesteps):
            v, _ = dit(state, x, t)                                      # commit=False: state untouched
            eps = jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, c), i + 1), shape)
            x = renoise_step(x, v, eps, {n: a[i] for n, a in k.items()})  # x0 = x − σ_i·v, re-noised to σ_{i+1}
        _, state = dit(state, x, 0.0, commit=True)                       # clean t = 0 pass writes the chunk
        emit(x)                                                          # x0 (σ_n = 0); the old state was donated

:func:`sample_chunk` is that chunk loop as one function (the steps a ``lax.scan``), and
``dit.sample_chunk(state, key, c, sched, shape=shape)`` its jitted form (what ``StreamingPipeline`` runs).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sana_jax.errors import InputError
from sana_jax.models.preconditioning import preconditioned
from sana_jax.models.sana_video import CrossAttention, LinearSelfAttention, SanaVideoBlock, SanaVideoTransformer
from sana_jax.nn.attention import mask_to_bias, softmax_attention
from sana_jax.nn.layers import layer_norm, modulate
from sana_jax.kernels.dispatch import active_mesh, linear_attention, on_mesh
from sana_jax.nn.linear_attention import LinearAttentionState
from sana_jax.nn.rope import rope_3d
from sana_jax.sampling.schedules import Schedule
from sana_jax.sampling.solvers import renoise_coefficients, renoise_step

# RoPE tables are gathered by absolute frame and built this long (rows below 1024 are bit-identical to the plain
# model's); 4096 latent frames ≈ 11 min at 24 fps. Past the end, step() returns NaN rather than clamped positions.
DEFAULT_MAX_FRAMES = 4096


def stream_max_frames(frames: int) -> int:
    """The RoPE table length for a stream of ``frames`` latent frames: :data:`DEFAULT_MAX_FRAMES`, or the next
    multiple of it (the length is static: one executable per 4096 frames, not per stream length)."""
    return max(DEFAULT_MAX_FRAMES, -(-frames // DEFAULT_MAX_FRAMES) * DEFAULT_MAX_FRAMES)


def split_frames(frames: int, chunk: int) -> tuple[int, ...]:
    """LongSANA's split of a clip's latent frames (``_create_autoregressive_segments``): chunks of ``chunk``
    frames, the remainder in the *first* chunk. A clip has 1 + k·chunk latent frames (the causal VAE's latent frame
    0 holds video frame 0 alone), so every chunk after the first has the same size: one compiled step shape for the
    rest of the stream. (Token-level chunking, :func:`sana_jax.kernels.linear_attention.split_tokens`, cuts from
    the start instead.)

    ``split_frames(31, 10) == (11, 10, 10)``; fewer frames than ``chunk`` make one chunk.
    """
    if frames < 1 or chunk < 1:
        raise InputError(f"need frames >= 1 and chunk >= 1, got frames={frames}, chunk={chunk}")
    n = max(frames // chunk, 1)
    return (frames - chunk * (n - 1),) + (chunk,) * (n - 1)


def _post_patch_sizes(model: SanaVideoTransformer, frames: int, chunk: int | Sequence[int]) -> tuple[int, ...]:
    pt = model.config.patch_size[0]
    sizes = split_frames(frames, chunk) if isinstance(chunk, (int, np.integer)) else tuple(int(c) for c in chunk)
    if sum(sizes) != frames or min(sizes) < 1 or any(c % pt for c in sizes):
        raise InputError(f"chunk sizes {sizes} must be positive multiples of the temporal patch {pt} summing to the "
                         f"{frames} latent frames")
    return tuple(c // pt for c in sizes)


def _rope(model: SanaVideoTransformer, grid, t_offset, max_frames: int):
    cfg = model.config
    return rope_3d(grid, cfg.attention_head_dim, max_seq_len=max(cfg.rope_max_seq_len, max_frames),
                   t_offset=t_offset)


# -- one block, causal across chunks ----------------------------------------------------------------------------


def _qkv(attn: LinearSelfAttention, h: jax.Array):
    b, n, _ = h.shape
    q, k, v = attn.to_q(h), attn.to_k(h), attn.to_v(h)
    if attn.norm_q is not None:
        q, k = attn.norm_q(q), attn.norm_k(k)
    return tuple(a.reshape(b, n, attn.heads, -1) for a in (q, k, v))


def _self_attention(attn: LinearSelfAttention, h: jax.Array, rope, sizes, window,
                    past: LinearAttentionState | None):
    """h (B, T, S, D) → (attn1 output (B, T, S, D), per-chunk own states (B, K, H, d, d) / (B, K, H, d)).

    The dispatcher's chunk-causal linear attention (the Pallas kernel on GPU, sharded on a mesh; the XLA reference
    elsewhere): chunk k reads its own state, the ``window`` chunks before it (all when None) and ``past``. One chunk
    with no past is exactly the plain model's computation."""
    b, t, s, d = h.shape
    q, k, v = _qkv(attn, h.reshape(b, t * s, d))
    chunks = None if len(sizes) == 1 else tuple(c * s for c in sizes)  # frames → tokens
    out, own = linear_attention(q, k, v, *rope, causal_chunk=chunks, window=window, initial_state=past,
                                return_states=True)
    return attn.to_out(out.reshape(b, t * s, d)).reshape(b, t, s, d), own


def _cross_attention(attn: CrossAttention, x: jax.Array, k: jax.Array, v: jax.Array, bias) -> jax.Array:
    """``CrossAttention.__call__`` with the caption's K/V given (computed once per prompt)."""
    b, n, d = x.shape
    q = attn.to_q(x)
    if attn.norm_q is not None:
        q = attn.norm_q(q)
    out = softmax_attention(q.reshape(b, n, attn.heads, -1), k, v, bias)
    return attn.to_out(out.reshape(b, n, d))


def _temporal_conv(y: jax.Array, kernel: jax.Array, prev: jax.Array | None, sizes) -> jax.Array:
    """``glumb.temporal_conv`` made causal across chunks: a chunk's last frame sees zeros, not the next chunk;
    the clip's first frame sees ``prev`` (the previous chunk's last pre-conv frame) or zeros."""
    kernel = kernel.astype(y.dtype)
    taps = jnp.einsum("bt...c,kcd->kbt...d", y, kernel)
    zero = jnp.zeros_like(taps[0, :, :1])
    from_prev = zero if prev is None else jnp.dot(prev.astype(y.dtype), kernel[0])
    from_next = jnp.concatenate([taps[2, :, 1:], zero], axis=1)
    if len(sizes) > 1:
        keep = np.ones(sum(sizes), bool)
        keep[np.cumsum(sizes)[:-1] - 1] = False
        from_next = jnp.where(keep.reshape((1, -1) + (1,) * (y.ndim - 2)), from_next, 0)
    return jnp.concatenate([from_prev, taps[0, :, :-1]], axis=1) + taps[1] + from_next


def _block(block: SanaVideoBlock, x, t6, text_kv, text_bias, rope, grid, sizes, window, past, tail):
    """``SanaVideoBlock.__call__`` with the causal attention and conv. Returns (x, own states, conv tail)."""
    b, t, s, d = x.shape
    mods = block.scale_shift_table[...].astype(x.dtype) + t6.reshape(*t6.shape[:-1], 6, d)
    shift1, scale1, gate1, shift2, scale2, gate2 = (mods[..., i, :] for i in range(6))

    h = modulate(layer_norm(x, block.eps), shift1, scale1)
    attn, own = _self_attention(block.attn1, h, rope, sizes, window, past)
    x = x + gate1 * attn

    x = x + _cross_attention(block.attn2, x.reshape(b, t * s, d), *text_kv, text_bias).reshape(b, t, s, d)

    h = modulate(layer_norm(x, block.eps), shift2, scale2)
    y = block.ff.spatial(h.reshape(b, *grid, d))
    h = y + _temporal_conv(y, block.ff.temporal_kernel(), tail, sizes)
    return x + gate2 * h.reshape(b, t, s, d), own, y[:, -1:]


# -- one-shot form -------------------------------------------------------------------------------------------------


@preconditioned  # a PreconditionedTransformer: c_in and the velocity around this function
def causal_forward(model: SanaVideoTransformer, latents: jax.Array, text: jax.Array, timestep: jax.Array,
                   text_mask: jax.Array | None = None, *, chunk: int | Sequence[int] = 10, window: int | None = None,
                   causal: bool = True, t_offset: int | jax.Array = 0,
                   max_frames: int = DEFAULT_MAX_FRAMES) -> jax.Array:
    """Block-causal velocity of a whole clip in one pass (equals streaming it chunk by chunk with :func:`step`).

    Args:
      latents, text, timestep, text_mask: as ``SanaVideoTransformer.__call__``; ``timestep`` may be (B, T') per
        latent frame (diffusion forcing, or each chunk at its own noise level).
      chunk: latent frames per chunk (LongSANA split: remainder in the first chunk) or explicit chunk sizes.
      window: each chunk attends to itself and the ``window`` chunks before it (``None``: all earlier chunks).
      causal: ``False`` ignores ``chunk``/``window``: the whole clip is one chunk, i.e. the plain model.
      t_offset: absolute latent frame of the first frame (RoPE), static or traced.

    Memory: per-chunk attention states (B, K, heads, d, d) float32 per layer are materialised.
    """
    grid = model.check_latents(latents.shape)
    sizes = _post_patch_sizes(model, latents.shape[1], chunk) if causal else (grid[0],)
    if isinstance(t_offset, (int, np.integer)) and t_offset + grid[0] > max(model.config.rope_max_seq_len, max_frames):
        raise InputError(f"frames {t_offset}..{t_offset + grid[0]} exceed the RoPE table ({max_frames} frames): "
                         "raise max_frames")
    if window is not None and window < 1:
        raise InputError(f"window must be >= 1 chunk or None, got {window}")
    b = latents.shape[0]
    rope = _rope(model, grid, t_offset, max_frames)
    x = model.embed_patches(latents)
    t6, emb = model.embed_timestep(timestep, b, grid[0])
    caption = model.embed_text(text)
    bias = mask_to_bias(text_mask)
    graphdef, blocks = nnx.split(model.blocks)

    def body(h, block_state):
        block = nnx.merge(graphdef, block_state)
        h, _, _ = _block(block, h, t6, block.attn2.key_value(caption), bias, rope, grid, sizes, window, None, None)
        return h, None

    if model.remat:
        body = jax.checkpoint(body, prevent_cse=False)
    x, _ = jax.lax.scan(body, x, blocks)
    return model.unpatchify(x, emb, grid)


# -- incremental form ----------------------------------------------------------------------------------------------


class StreamState(NamedTuple):
    """Everything the next chunk needs; its shapes never change (``layers`` leads every per-layer leaf).

    ``kv``/``k_sum`` hold the running sums S = Σ R(φ(k)) vᵀ (L, B, H, d, d) and z = Σ φ(k) (L, B, H, d) in
    float32, or, with a sliding window of W chunks, a ring of per-chunk states (L, W, B, H, d, d) / (L, W, B, H, d)
    whose slot ``chunks % W`` is overwritten by each commit. ``conv_tail`` (L, B, 1, H', W', D) is the last
    pre-conv FFN frame of the last committed chunk. ``text_k``/``text_v`` (L, B, L_text, heads, d) and
    ``text_bias`` (B, 1, 1, L_text) are the prompt's cross-attention inputs. ``frame`` is the absolute post-patch
    frame of the next chunk, ``chunks`` the number committed (both int32 scalars, traced).
    """

    kv: jax.Array
    k_sum: jax.Array
    conv_tail: jax.Array
    text_k: jax.Array
    text_v: jax.Array
    text_bias: jax.Array
    frame: jax.Array
    chunks: jax.Array

    @property
    def window(self) -> int | None:
        return self.kv.shape[1] if self.kv.ndim == 6 else None

    @property
    def nbytes(self) -> int:
        return sum(int(a.size) * a.dtype.itemsize for a in jax.tree.leaves(self))


def _prompt_kv(model: SanaVideoTransformer, text: jax.Array, text_mask: jax.Array | None):
    caption = model.embed_text(text)
    graphdef, blocks = nnx.split(model.blocks)

    def body(carry, block_state):
        return carry, nnx.merge(graphdef, block_state).attn2.key_value(caption)

    _, (k, v) = jax.lax.scan(body, None, blocks)
    mask = jnp.ones(text.shape[:2], jnp.float32) if text_mask is None else text_mask
    return k, v, mask_to_bias(mask)  # an all-zero bias adds exactly 0: same result as no mask, fixed pytree


def init_state(model: SanaVideoTransformer, text: jax.Array, text_mask: jax.Array | None = None, *,
               height: int, width: int, window: int | None = None, t_offset: int = 0) -> StreamState:
    """The empty stream for latents of ``height`` × ``width`` (latent pixels), batch = ``text.shape[0]``.

    ``window``: attend to the last ``window`` committed chunks only (``None``: all of them).
    """
    cfg = model.config
    b = text.shape[0]
    _, hp, wp = model.check_latents((b, cfg.patch_size[0], height, width, cfg.in_channels))
    if window is not None and window < 1:
        raise InputError(f"window must be >= 1 chunk or None, got {window}")
    layers, heads, d = cfg.num_layers, cfg.num_attention_heads, cfg.attention_head_dim
    ring = () if window is None else (window,)
    text_k, text_v, bias = _prompt_kv(model, text, text_mask)
    return StreamState(
        kv=jnp.zeros((layers, *ring, b, heads, d, d), jnp.float32),
        k_sum=jnp.zeros((layers, *ring, b, heads, d), jnp.float32),
        conv_tail=jnp.zeros((layers, b, 1, hp, wp, cfg.inner_dim), model.dtype),
        text_k=text_k, text_v=text_v, text_bias=bias,
        frame=jnp.asarray(t_offset, jnp.int32), chunks=jnp.zeros((), jnp.int32))


def set_prompt(model: SanaVideoTransformer, state: StreamState, text: jax.Array,
               text_mask: jax.Array | None = None) -> StreamState:
    """Switch the prompt (interactive streaming): new cross-attention K/V, the video state kept.
    Same text length ⇒ same shapes ⇒ no recompilation."""
    text_k, text_v, bias = _prompt_kv(model, text, text_mask)
    if text_k.shape != state.text_k.shape:
        raise InputError(f"new prompt gives K/V {text_k.shape}, the stream holds {state.text_k.shape}: pad the "
                         "text to the same length")
    return state._replace(text_k=text_k, text_v=text_v, text_bias=bias)


@preconditioned  # a PreconditionedTransformer: c_in and the velocity around this function
def step(model: SanaVideoTransformer, state: StreamState, latents: jax.Array, timestep: jax.Array, *,
         commit: bool = False, max_frames: int = DEFAULT_MAX_FRAMES) -> tuple[jax.Array, StreamState | None]:
    """Velocity of one chunk ``latents`` (B, T_c, H, W, C) against the committed past.

    ``timestep``: scalar, (B,) or (B, T_c') per frame. ``commit=False`` (denoising steps) returns ``(v, None)``;
    ``commit=True`` (the clean t = 0 pass) also returns the state with this chunk added (S, z += this chunk's, or
    its ring slot overwritten; conv tail = this chunk's last frame; frame offset advanced). Frames past
    ``max_frames`` (the RoPE table) give NaN velocities.
    """
    grid = model.check_latents(latents.shape)
    b = latents.shape[0]
    want = (state.conv_tail.shape[1], *state.conv_tail.shape[3:5])
    if (b, *grid[1:]) != want:
        raise InputError(f"chunk latents {latents.shape} give (batch, H', W') = {(b, *grid[1:])}; the stream was "
                         f"initialised for {want}")
    window = state.window
    rope = _rope(model, grid, state.frame, max_frames)
    x = model.embed_patches(latents)
    t6, emb = model.embed_timestep(timestep, b, grid[0])
    graphdef, blocks = nnx.split(model.blocks)

    def body(h, xs):
        block_state, kv, k_sum, tail, text_k, text_v = xs
        if window is not None:
            kv, k_sum = kv.sum(axis=0), k_sum.sum(axis=0)
        h, own, new_tail = _block(nnx.merge(graphdef, block_state), h, t6, (text_k, text_v), state.text_bias, rope,
                                  grid, (grid[0],), None, LinearAttentionState(kv, k_sum), tail)
        return h, ((own.kv[:, 0], own.k_sum[:, 0], new_tail) if commit else None)

    x, ys = jax.lax.scan(body, x, (blocks, state.kv, state.k_sum, state.conv_tail, state.text_k, state.text_v))
    velocity = model.unpatchify(x, emb, grid)
    # A gather past the RoPE table would clamp silently: past the end the output is NaN instead.
    limit = max(model.config.rope_max_seq_len, max_frames)
    velocity = jnp.where(state.frame + grid[0] <= limit, velocity, jnp.nan)
    if not commit:
        return velocity, None
    own_kv, own_k_sum, tails = ys
    if window is None:
        kv, k_sum = state.kv + own_kv, state.k_sum + own_k_sum
    else:
        slot = state.chunks % window
        kv = jax.lax.dynamic_update_index_in_dim(state.kv, own_kv, slot, axis=1)
        k_sum = jax.lax.dynamic_update_index_in_dim(state.k_sum, own_k_sum, slot, axis=1)
    return velocity, state._replace(kv=kv, k_sum=k_sum, conv_tail=tails.astype(state.conv_tail.dtype),
                                    frame=state.frame + grid[0], chunks=state.chunks + 1)


def renoise_inputs(schedule: Schedule) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(timesteps (n,), :func:`~sana_jax.sampling.solvers.renoise_coefficients`) of a re-noising schedule ending at
    σ = 0 (``longsana_schedule``): what :func:`sample_chunk` scans over."""
    if schedule.solver != "renoise" or schedule.sigmas[-1] != 0:
        raise InputError("the streaming sampler needs a re-noising schedule ending at sigma 0 (longsana_schedule), "
                         f"got solver {schedule.solver!r} ending at sigma {float(schedule.sigmas[-1])}")
    return schedule.timesteps, renoise_coefficients(schedule.sigmas)


def _frames_over_context(x: jax.Array) -> jax.Array:
    """Inside a program on a mesh (``StreamingDiT(mesh=)``): the chunk's latent frames split over ``context`` when
    they divide (XLA partitions the DiT from there; the linear attention sums its state with one all-reduce), else
    left as they are."""
    mesh = active_mesh()
    parts = 1 if mesh is None else int(dict(mesh.shape).get("context", 1))
    if parts == 1 or x.shape[1] % parts:
        return x
    from jax.sharding import NamedSharding, PartitionSpec

    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec(None, "context")))


def sample_chunk(model: SanaVideoTransformer, state: StreamState, key: jax.Array, index: jax.Array,
                 timesteps: jax.Array, coefficients: dict[str, jax.Array], *, shape: tuple[int, ...],
                 max_frames: int = DEFAULT_MAX_FRAMES, step_fn=step) -> tuple[jax.Array, StreamState]:
    """One chunk of LongSANA's sampler (the module docstring's loop), CFG 1: fresh noise, a re-noising step per
    timestep (:func:`~sana_jax.sampling.solvers.renoise_step`; the last, to σ = 0, leaves x0), then the clean
    t = 0 pass that commits the chunk. ``timesteps``/``coefficients``: :func:`renoise_inputs`. Noise keys:
    ``fold_in(fold_in(key, index), 0)`` for the initial noise, ``…, i + 1)`` for step i's re-noising.
    ``step_fn``: the DiT's chunk step (:func:`step`; the Wan students': ``sana_jax.models.wan_causal.step``).
    Returns (the chunk's clean latents, float32 ``shape``; the next state)."""
    b = shape[0]
    chunk_key = jax.random.fold_in(key, index)
    x = _frames_over_context(jax.random.normal(jax.random.fold_in(chunk_key, 0), shape, jnp.float32))

    def denoise(x, inputs):
        i, t, k = inputs
        v, _ = step_fn(model, state, x.astype(model.dtype), jnp.broadcast_to(t, (b,)), max_frames=max_frames)
        noise = jax.random.normal(jax.random.fold_in(chunk_key, i + 1), shape, jnp.float32)
        return _frames_over_context(renoise_step(x, v.astype(jnp.float32), noise, k)), None

    x, _ = jax.lax.scan(denoise, x, (jnp.arange(timesteps.shape[0]), timesteps, coefficients))
    _, state = step_fn(model, state, x.astype(model.dtype), jnp.zeros((b,), jnp.float32), commit=True,
                       max_frames=max_frames)
    return x, state


class StreamingDiT:
    """A model's streaming functions, jitted: the chunk step ``dit(state, latents, t, commit=False) -> (v, state)``,
    the whole sampler for one chunk (:meth:`sample_chunk`), :meth:`init_state` and :meth:`set_prompt`.

    Parameters are split once and passed as an argument (not baked into the executable); the frame offset, the
    timestep and the chunk index are traced, so every chunk of the same size reuses the same executables.
    With ``donate=True`` the calls that return a new state (commit, :meth:`sample_chunk`, :meth:`set_prompt`)
    donate the one passed in (do not reuse it). ``traces`` counts Python traces (a test hook).
    """

    #: the model's streaming functions (a subclass for another DiT family replaces them) and ``init_state``'s
    #: static arguments
    FUNCTIONS = {"step": step, "sample_chunk": sample_chunk, "init_state": init_state, "set_prompt": set_prompt}
    INIT_STATIC = ("height", "width", "window")

    def __init__(self, model: SanaVideoTransformer, *, donate: bool = True, max_frames: int = DEFAULT_MAX_FRAMES,
                 mesh=None):
        self.model, self.max_frames, self.mesh = model, max_frames, mesh
        self.graphdef, self.params = nnx.split(model)
        if mesh is not None:  # weights per the logical-axis rules (heads / MLP over tensor); XLA partitions the rest
            from sana_jax.parallel.rules import shard_state

            self.params = shard_state(self.params, mesh)
        self.traces = 0
        donated = (1,) if donate else ()

        def on_params(fn):  # fn(model, ...) → jittable fn(params, ...), counting its traces
            def traced(params, *args, **kwargs):
                self.traces += 1
                return fn(nnx.merge(self.graphdef, params), *args, **kwargs)
            return on_mesh(traced, mesh)  # on a mesh the linear-attention kernel runs sharded

        frames, fns = ("max_frames",), self.FUNCTIONS
        self._denoise = jax.jit(on_params(functools.partial(fns["step"], commit=False)), static_argnames=frames)
        self._commit = jax.jit(on_params(functools.partial(fns["step"], commit=True)), static_argnames=frames,
                               donate_argnums=donated)
        self._chunk = jax.jit(on_params(fns["sample_chunk"]), static_argnames=("shape", *frames),
                              donate_argnums=donated)
        self._init = jax.jit(on_params(fns["init_state"]), static_argnames=self.INIT_STATIC)
        self._set_prompt = jax.jit(on_params(fns["set_prompt"]), donate_argnums=donated)

    def init_state(self, text, text_mask=None, *, height: int, width: int, window: int | None = None,
                   t_offset: int = 0, frames: int | None = None, chunk_frames: int | None = None, sink: int = 0
                   ) -> StreamState:
        """The empty stream (:func:`init_state`). ``frames``/``chunk_frames`` (the stream's length and chunk) are
        what a KV-cached DiT sizes its cache by; LongSANA's running sums need neither, and have no sink."""
        del frames, chunk_frames
        if sink:
            raise InputError("LongSANA's linear attention has no attention sink (sink is for the Wan students)")
        return self._init(self.params, text, text_mask, height=height, width=width, window=window,
                          t_offset=t_offset)

    def set_prompt(self, state: StreamState, text, text_mask=None) -> StreamState:
        return self._set_prompt(self.params, state, text, text_mask)

    def _args(self, state, latents, timestep):
        timestep = jnp.asarray(timestep, jnp.float32)
        if timestep.ndim == 0:
            timestep = jnp.broadcast_to(timestep, (latents.shape[0],))
        return self.params, state, latents, timestep

    def __call__(self, state: StreamState, latents: jax.Array, timestep, *, commit: bool = False):
        return (self._commit if commit else self._denoise)(*self._args(state, latents, timestep),
                                                           max_frames=self.max_frames)

    def lower(self, state: StreamState, latents: jax.Array, timestep, *, commit: bool = False):
        """``jax.stages.Lowered`` of the step (``.compile().memory_analysis()`` for memory checks)."""
        return (self._commit if commit else self._denoise).lower(*self._args(state, latents, timestep),
                                                                 max_frames=self.max_frames)

    def _chunk_args(self, state, key, index, schedule, shape, max_frames):
        timesteps, coefficients = renoise_inputs(schedule)
        args = (self.params, state, key, jnp.asarray(index, jnp.int32), timesteps, coefficients)
        return args, {"shape": tuple(shape), "max_frames": max_frames or self.max_frames}

    def sample_chunk(self, state: StreamState, key: jax.Array, index, schedule: Schedule, *,
                     shape: tuple[int, ...], max_frames: int | None = None) -> tuple[jax.Array, StreamState]:
        """:func:`sample_chunk` for chunk ``index`` of the stream seeded by ``key``: (clean latents, next state).
        ``max_frames``: the RoPE table length (default the constructor's; :func:`stream_max_frames`)."""
        args, static = self._chunk_args(state, key, index, schedule, shape, max_frames)
        return self._chunk(*args, **static)

    def lower_chunk(self, state: StreamState, key: jax.Array, index, schedule: Schedule, *,
                    shape: tuple[int, ...], max_frames: int | None = None):
        """``jax.stages.Lowered`` of :meth:`sample_chunk` (``state`` may be ``jax.ShapeDtypeStruct`` s)."""
        args, static = self._chunk_args(state, key, index, schedule, shape, max_frames)
        return self._chunk.lower(*args, **static)

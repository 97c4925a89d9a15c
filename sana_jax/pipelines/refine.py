"""Stage 2 of SANA-Video's 2K pipeline: the LTX-2 refiner (docs/refiner.md). Reference: diffusers ``LTX2Pipeline``
(``huggingface/diffusers:src/diffusers/pipelines/ltx2/pipeline_ltx2.py``) as SANA's refiner script calls it, with the
distilled sigmas of ``Lightricks/LTX-2:packages/ltx-pipelines/src/ltx_pipelines/utils/constants.py``.

Given normalised LTX-2 latents (SANA-Video 720p's output, channels-last (B, T, H, W, 128)) and a prompt:

1. optional ×2 spatial upsampling in *raw* latent space: ``normalize(up(denormalize(z)))`` (the VAE's
   per-channel statistics);
2. re-noise to the first distilled sigma: ``z = σ0·ε + (1 − σ0)·z``, σ0 = 0.909375;
3. the zero audio latent: SANA's recipe feeds ``audio_vae.latents_mean``, which normalises to exactly 0, so the
   audio tokens are ``σ0·ε_a`` of shape (B, L, 128) with L = round(25 · duration) (duration = frames / fps);
4. 3 Euler steps over σ = [0.909375, 0.725, 0.421875, 0], no guidance, float32 updates, the audio stream
   denoised jointly with the video (the LTX-2.0 DiT always runs both; its audio output is discarded).

This is diffusers' ``LTX2Pipeline`` called as SANA's script calls it (packed latents so that they are not
re-normalised, ``audio_latents`` = the audio VAE's mean, ``sigmas``, ``noise_scale=σ0``, ``guidance_scale=1``,
``frame_rate=16``); ``tests/test_two_stage.py`` checks the two agree.

**Joint (video, audio) state.** ``sana_jax.sampling.sample`` runs one compiled ``lax.scan`` over an *array*;
the refiner's state is two arrays. Both are flattened per sample and concatenated: ``x = [video.reshape(B, −1) |
audio.reshape(B, −1)]`` (B, N·C + L·C_a). The model function splits and reshapes them back, runs the DiT with
σ = t / 1000 (``sample`` feeds t = σ·1000, diffusers' timestep convention) and returns the two velocities
flattened the same way. The Euler update is elementwise, so this equals stepping the streams separately.
In video-only mode (``video_only=True``: no audio stream, no a↔v attention — an approximation, see
``models/ltx2_transformer.py``) the state is the video alone.

**On a mesh** (``mesh=``: ``RefinePipeline.from_pretrained(..., mesh="tensor=2,context=4")`` or
``refine_latents(..., mesh=)``) the DiT weights are placed by the logical-axis rules (heads/MLP over ``tensor``;
``from_pretrained`` reads each device's shard straight from the safetensors file), the video tokens are sharded over
``context`` (batch over ``data`` when it divides) and the video self-attention runs as Ulysses
(``sana_jax.parallel.ulysses``). The text encoder, connectors, upsampler and VAE stay on one device.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import converters
from converters import ltx2_transformer as transformer_conv
from converters.loader import WEIGHT_NAMES, mesh_shardings, open_checkpoint
from converters.safetensors_io import open_safetensors
from converters.tables import sharded_loading
from sana_jax.errors import CheckpointError, InputError
from sana_jax.io.video import SavesVideo, to_uint8
from sana_jax.models.ltx2_transformer import STAGE2_SIGMA0, LTX2Transformer, LTX2TransformerConfig, audio_num_frames
from sana_jax.parallel.rules import shard_state
from sana_jax.pipelines.components import PipelineFolder
from sana_jax.sampling import DISTILLED_SIGMAS, distilled_schedule, renoise, sample
from sana_jax.text.ltx2_prompt import DEFAULT_MAX_LENGTH, LTX2TextEmbeddings, encode_prompt, prompt_encoder
from sana_jax.text.tokenizer import Tokenizer

DEFAULT_FPS = 16  # SANA-Video's frame rate; the refiner's RoPE positions are conditioned on it


# --------------------------------------------------------------------------------------------------- the loop
@functools.lru_cache(maxsize=32)
def _refine_model_fn(graphdef, grid: tuple[int, int, int, int], audio_shape: tuple[int, int] | None, fps: float,
                     t_scale: float, mesh=None) -> Callable:
    """The ``sample`` model function for one (model, latent grid, audio length, fps). Cached, so that the same
    arguments give the same function object and ``sample`` reuses its compiled loop."""
    t, h, w, c = grid
    n_video = t * h * w * c

    def model_fn(params, x, timestep, cond):
        b = x.shape[0]
        model = nnx.merge(graphdef, params)
        video = x[:, :n_video].reshape(b, t, h, w, c).astype(model.dtype)
        audio = None if audio_shape is None else x[:, n_video:].reshape(b, *audio_shape).astype(model.dtype)
        sigma = timestep.astype(jnp.float32) / jnp.float32(t_scale)
        v_video, v_audio = model(video, audio, cond["video_text"], cond["audio_text"], sigma, fps=fps,
                                 video_text_mask=cond["mask"], audio_text_mask=cond["mask"],
                                 video_only=audio_shape is None, mesh=mesh)
        parts = [v_video.reshape(b, -1)]
        if audio_shape is not None:
            parts.append(v_audio.reshape(b, -1).astype(v_video.dtype))
        return jnp.concatenate(parts, axis=1)

    return model_fn


@functools.partial(jax.jit, static_argnums=0)
def _upsample_jit(graphdef, params, latents, mean, std):
    return nnx.merge(graphdef, params).upsample_normalized(latents, mean, std)


def upsample_latents(upsampler, latents, latents_mean, latents_std) -> jax.Array:
    """×2 spatial upsampling of normalised latents in raw latent space (``LTX2LatentUpsampler.upsample_normalized``),
    jitted (compiled once per shape)."""
    graphdef, params = nnx.split(upsampler)
    return _upsample_jit(graphdef, params, jnp.asarray(latents, jnp.float32), jnp.asarray(latents_mean),
                         jnp.asarray(latents_std))


def _as_mesh(mesh):
    if isinstance(mesh, str):
        from sana_jax.parallel import make_mesh

        return make_mesh(mesh)
    return mesh


def _gathered(x: jax.Array) -> jax.Array:
    """A mesh-sharded result as one array on the default device (the VAE decodes on one device; on several hosts
    every process gets the whole array)."""
    if x.is_fully_addressable:
        return jnp.asarray(np.asarray(x))
    from jax.experimental import multihost_utils

    return jnp.asarray(multihost_utils.process_allgather(x, tiled=True))


def _as_split(model) -> tuple:
    """(graphdef, params, config) of a module or of an ``nnx.split`` pair."""
    if isinstance(model, nnx.Module):
        return (*nnx.split(model), model.config)
    graphdef, params = model
    return graphdef, params, nnx.merge(graphdef, params).config


def _text_batch(text: LTX2TextEmbeddings | Sequence, batch: int) -> dict:
    video, audio, mask = (jnp.asarray(a) for a in text)
    if video.shape[0] != batch:
        if video.shape[0] != 1:
            raise InputError(f"{video.shape[0]} prompt embeddings for a batch of {batch} latents")
        video, audio, mask = (jnp.broadcast_to(a, (batch, *a.shape[1:])) for a in (video, audio, mask))
    return {"video_text": video, "audio_text": audio, "mask": mask}


def refine_latents(transformer, latents, text: LTX2TextEmbeddings | Sequence, *, key: jax.Array | None = None,
                   noise=None, audio_noise=None, fps: float = DEFAULT_FPS,
                   sigmas: Sequence[float] = DISTILLED_SIGMAS, upsampler=None, latents_mean=None,
                   latents_std=None, video_only: bool = False,
                   progress: Callable[[int], None] | None = None, mesh=None) -> jax.Array:
    """Stage 2 on normalised latents (module docstring); returns the refined normalised latents, float32.

    Args:
      transformer: an :class:`LTX2Transformer` or its ``nnx.split`` pair ``(graphdef, params)`` (pass the pair to
        avoid re-splitting a 19 B model on every call).
      latents: (B, T, H, W, C) normalised LTX-2 latents (channels-last), e.g. SANA-Video 720p's output.
      text: ``LTX2TextEmbeddings`` (video, audio, mask) from ``sana_jax.text.ltx2_prompt``; batch B or 1.
      key: PRNG key for the video noise and the audio noise (split in two) when ``noise`` / ``audio_noise`` are
        not given.
      noise: ε for the video re-noising, the shape of the (upsampled) latents.
      audio_noise: ε_a (B, L, audio_in_channels), L = ``audio_num_frames(8(T−1)+1, fps)``.
      fps: the frame rate the video and audio positions are conditioned on (SANA: 16); also sets L.
      sigmas: the distilled stage-2 sigmas (a trailing 0 is implied); σ0 = ``sigmas[0]`` is the re-noise level.
      upsampler: an ``LTX2LatentUpsampler`` to apply first (×2 in H and W), with the VAE's ``latents_mean`` /
        ``latents_std`` (its raw space).
      video_only: drop the audio stream and the a↔v attention (approximation; no audio noise is used).
      progress: called with the step index after each of the Euler steps.
      mesh: a ``jax.sharding.Mesh`` (or a spec string such as ``"data=2,context=4"``) to run the DiT on (module
        docstring); parameters not yet placed on it are placed by the logical-axis rules.
    """
    graphdef, params, cfg = _as_split(transformer)
    mesh = _as_mesh(mesh)
    if mesh is not None:
        params = shard_state(params, mesh)  # a no-op for parameters already placed (from_pretrained(mesh=))
    latents = jnp.asarray(latents, jnp.float32)
    if latents.ndim != 5 or latents.shape[-1] != cfg.in_channels:
        raise InputError(f"latents must be normalised LTX-2 latents (B, T, H, W, {cfg.in_channels}) channels-last, "
                         f"got shape {tuple(latents.shape)}")
    if upsampler is not None:
        if latents_mean is None or latents_std is None:
            raise InputError("upsampling needs the VAE's latents_mean and latents_std (it works in raw latent space)")
        latents = upsample_latents(upsampler, latents, latents_mean, latents_std)
    video_only = video_only or cfg.video_only
    b, t, h, w, c = latents.shape
    schedule = distilled_schedule(sigmas)
    sigma0 = float(list(sigmas)[0])
    if key is None and (noise is None or (audio_noise is None and not video_only)):
        raise InputError("refine_latents needs a PRNG `key` or explicit `noise` and `audio_noise`")
    key_v, key_a = jax.random.split(key) if key is not None else (None, None)
    if noise is None:
        noise = jax.random.normal(key_v, latents.shape, jnp.float32)
    elif tuple(np.shape(noise)) != latents.shape:
        raise InputError(f"noise must have the latents' shape {latents.shape}, got {tuple(np.shape(noise))}")
    state = [renoise(latents, noise, sigma0).reshape(b, -1)]
    audio_shape = None
    if not video_only:
        num_frames = (t - 1) * cfg.vae_scale_factors[0] + 1
        audio_shape = (audio_num_frames(num_frames, fps, cfg), cfg.audio_in_channels)
        if audio_noise is None:
            audio_noise = jax.random.normal(key_a, (b, *audio_shape), jnp.float32)
        elif tuple(np.shape(audio_noise)) != (b, *audio_shape):
            raise InputError(f"audio_noise must have shape {(b, *audio_shape)} ({num_frames} frames at {fps} fps), "
                             f"got {tuple(np.shape(audio_noise))}")
        # the zero audio latent (normalised audio VAE mean = 0) noised like the video: σ0·ε + (1 − σ0)·0
        state.append(renoise(jnp.zeros((b, *audio_shape), jnp.float32), audio_noise, sigma0).reshape(b, -1))
    x = jnp.concatenate(state, axis=1) if len(state) > 1 else state[0]
    model_fn = _refine_model_fn(graphdef, (t, h, w, c), audio_shape, float(fps), 1000.0, mesh)
    out = sample(model_fn, params, x, schedule=schedule, cond=_text_batch(text, b), guidance_scale=1.0,
                 progress=progress)
    return out[:, :t * h * w * c].reshape(b, t, h, w, c)


# --------------------------------------------------------------------------------------------- latents on disk
LATENTS_KEY = "latents"


def save_latents(latents, path: str | Path) -> Path:
    """Save normalised LTX-2 latents (B, T, H, W, C), channels-last, float32, as ``.npy`` or ``.safetensors``
    (tensor ``"latents"``), atomically — the input :func:`load_latents` and ``sana-jax refine`` read."""
    path = Path(path)
    arr = np.asarray(latents, np.float32)
    if arr.ndim != 5:
        raise InputError(f"latents must be (B, T, H, W, C), got shape {arr.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from converters.safetensors_io import save_safetensors

        save_safetensors({LATENTS_KEY: arr}, path, metadata={"layout": "BTHWC", "space": "normalised LTX-2 latents"})
    elif path.suffix == ".npy":
        tmp = path.with_name(f".{path.name}.partial.npy")
        np.save(tmp, arr)
        os.replace(tmp, path)
    else:
        raise InputError(f"{path}: latents are saved as .npy or .safetensors")
    return path


def load_latents(path: str | Path) -> np.ndarray:
    """Normalised LTX-2 latents from ``.npy`` / ``.safetensors`` (tensor ``"latents"``, or the only tensor), as
    float32 (B, T, H, W, C); a (T, H, W, C) array gets a batch axis."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: cannot read as a .npy array ({e})") from e
    elif path.suffix == ".safetensors":
        src = open_safetensors(path)
        names = list(src)
        if LATENTS_KEY in names:
            arr = src[LATENTS_KEY]
        elif len(names) == 1:
            arr = src[names[0]]
        else:
            raise InputError(f"{path}: holds {len(names)} tensors and none is named {LATENTS_KEY!r}")
    else:
        raise InputError(f"{path}: latents must be .npy or .safetensors")
    arr = np.asarray(arr, np.float32)
    if arr.ndim == 4:
        arr = arr[None]
    if arr.ndim != 5:
        raise InputError(f"{path}: latents must be (B, T, H, W, C) or (T, H, W, C) channels-last, got {arr.shape}")
    return arr


# ----------------------------------------------------------------------------------------------- the pipeline
@dataclasses.dataclass
class RefineOutput(SavesVideo):
    """``frames`` uint8 (B, T, H, W, 3) (None when not decoded), ``latents`` refined normalised (B, T', H', W', C),
    ``timings`` seconds per stage, ``fps`` for saving."""

    frames: np.ndarray | None
    latents: np.ndarray
    timings: dict[str, float]
    fps: int = DEFAULT_FPS



def _bar(enabled: bool, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


@functools.partial(jax.jit, static_argnums=0, static_argnames=("tile", "frames_per_chunk", "noise_scale"))
def _decode_jit(graphdef, params, latents, timestep, key, *, tile=None, frames_per_chunk=None, noise_scale=None):
    vae = nnx.merge(graphdef, params)
    return vae.decode(latents, timestep=timestep, noise_scale=noise_scale, key=key, tile=tile,
                      frames_per_chunk=frames_per_chunk)


def decode_latents(vae, latents, *, tile: int | None = None, frames_per_chunk: int | None = None,
                   timestep: float = 0.0, noise_scale: float | None = None, key=None) -> np.ndarray:
    """Normalised latents → uint8 frames (B, T, H, W, 3) with an LTX-2 VAE (module or ``nnx.split`` pair), jitted
    and keyed by the VAE's structure (stage 1's and the refiner's VAE share the compiled decode). Defaults are
    diffusers': decode timestep 0, no noise (ltx-pipelines uses 0.05 / 0.025). ``tile``: latent pixels per spatial
    tile (a tile covering the whole latent is the untiled decode)."""
    graphdef, params = nnx.split(vae) if isinstance(vae, nnx.Module) else vae
    latents = jnp.asarray(latents, jnp.float32)
    if tile is not None and tile >= max(latents.shape[2:4]):
        tile = None
    if frames_per_chunk is not None and frames_per_chunk >= latents.shape[1]:
        frames_per_chunk = None
    if noise_scale and key is None:
        key = jax.random.key(0)
    video = _decode_jit(graphdef, params, latents, jnp.float32(timestep), key, tile=tile,
                        frames_per_chunk=frames_per_chunk, noise_scale=noise_scale or None)
    return to_uint8(video)


@functools.partial(jax.jit, static_argnums=0, static_argnames=("tile",))
def _encode_jit(graphdef, params, video, *, tile=None):
    return nnx.merge(graphdef, params).encode(video, tile=tile)


def _weights_file(folder: Path) -> Path:
    for name in WEIGHT_NAMES:
        if (folder / name).exists():
            return folder / name
    raise CheckpointError(f"{folder}: no weights found (looked for {', '.join(WEIGHT_NAMES)})")


def _lora_sources(lora, strength) -> list[tuple]:
    if lora is None:
        return []
    paths = [lora] if isinstance(lora, (str, Path)) else list(lora)
    strengths = [strength] * len(paths) if isinstance(strength, (int, float)) else list(strength)
    if len(strengths) != len(paths):
        raise InputError(f"{len(paths)} LoRA files but {len(strengths)} strengths")
    out = []
    for p, s in zip(paths, strengths):
        p = Path(p)
        if not p.is_file():
            raise InputError(f"--lora {p}: no such file")
        src = open_safetensors(p)
        other = [k for k in src if k.startswith(transformer_conv._OTHER_MODELS) or "_embeddings_connector." in k]
        if other:
            warnings.warn(f"{p}: {len(other)} LoRA tensors target the text connectors; only the transformer's are "
                          "fused (the connectors are loaded without LoRA)", stacklevel=3)
        out.append((src, float(s)))
    return out


class RefinePipeline:
    """The LTX-2 refiner: Gemma-3 + connectors (text), the LTX-2 DiT (+ fused LoRA), the LTX-2 VAE and optionally
    the ×2 latent upsampler. Build with :meth:`from_pretrained`; call with normalised latents and a prompt."""

    def __init__(self, transformer: LTX2Transformer, connectors, text_encoder, tokenizer: Tokenizer, vae,
                 upsampler=None, *, fps: int = DEFAULT_FPS, max_length: int = DEFAULT_MAX_LENGTH,
                 upsampler_source: Callable[[], object] | None = None, mesh=None):
        self.transformer, self.connectors, self.text_encoder = transformer, connectors, text_encoder
        self.tokenizer, self.vae, self._upsampler = tokenizer, vae, upsampler
        self._upsampler_source = upsampler_source
        self.fps, self.max_length = fps, max_length
        self.mesh = _as_mesh(mesh)
        graphdef, params = nnx.split(transformer)
        if self.mesh is not None:  # DiT weights per the logical-axis rules (no-op when loaded onto the mesh)
            params = shard_state(params, self.mesh)
            nnx.update(transformer, params)  # the module holds the placed arrays too: no second copy
        self._dit = graphdef, params
        self._vae_graph, self.vae_params = nnx.split(vae)
        self._encode_text = prompt_encoder(text_encoder, connectors)

    # -- construction ------------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | Path, *, lora=None, lora_strength: float | Sequence[float] = 1.0,
                        text_encoder: str | Path | None = None, upsampler: str | Path | bool | None = None,
                        dtype: str = "float32", text_dtype: str | None = None, vae_dtype: str = "float32",
                        video_only: bool = False, max_length: int = DEFAULT_MAX_LENGTH, fps: int = DEFAULT_FPS,
                        progress: bool = False, mesh=None) -> "RefinePipeline":
        """Load the refiner.

        Args:
          path: a diffusers ``LTX2Pipeline`` folder (``model_index.json`` with transformer, connectors, vae,
            text_encoder, tokenizer; ``latent_upsampler/`` beside them is used for ``--upsample``), or a native
            LTX-2 single file (``ltx-2-19b-dev.safetensors``: transformer, connectors and VAE; then
            ``text_encoder`` must name the Gemma-3 folder, which also holds the tokenizer).
          lora: LoRA file(s) fused into the transformer while its weights stream in (e.g.
            ``ltx-2-19b-distilled-lora-384.safetensors``, strength 1.0, SANA's recipe).
          text_encoder: a Gemma-3 folder (transformers layout, with its tokenizer) replacing the folder's own.
          upsampler: a latent-upsampler folder or file; ``None``: the folder's ``latent_upsampler/`` if it has one;
            ``False``: none. It is loaded on first use.
          dtype: transformer and connectors dtype (``bfloat16`` on GPU); ``text_dtype`` Gemma's (default: dtype);
            ``vae_dtype`` the VAE's.
          video_only: load without the audio stream and a↔v attention (13 B instead of 19 B parameters; an
            approximation of the stock refiner).
          mesh: a ``jax.sharding.Mesh`` or a spec string (``"tensor=2,context=4"``; ``sana_jax.parallel.make_mesh``):
            the transformer is loaded onto it (each device reads and receives only its shard of every weight) and
            refines with tokens over ``context`` and Ulysses self-attention (module docstring).
        """
        path = Path(path)
        mesh = _as_mesh(mesh)
        text_dtype = text_dtype or dtype
        loras = _lora_sources(lora, lora_strength)
        up_path = None
        if path.is_dir():
            pf = PipelineFolder.open(path)
            folder = pf.component("transformer")
            source = open_checkpoint(_weights_file(folder))
            cfg = LTX2TransformerConfig.from_json(folder / "config.json")
            where = str(folder)
            connectors = converters.load(pf.component("connectors"), dtype=dtype, progress=progress)
            vae = converters.load(pf.component("vae"), dtype=vae_dtype, progress=progress)
            te_folder = Path(text_encoder) if text_encoder is not None else pf.component("text_encoder")
            tok_folder = Path(text_encoder) if text_encoder is not None else pf.component("tokenizer")
            if upsampler is None and (path / "latent_upsampler").is_dir():
                up_path = path / "latent_upsampler"
        elif path.is_file():
            if text_encoder is None:
                raise InputError(f"{path}: a native LTX-2 file holds no Gemma-3 text encoder; pass text_encoder= "
                                 "(the --text-encoder folder of google/gemma-3-12b-it…)")
            source = open_safetensors(path)
            if not transformer_conv.is_native_layout(source):
                raise CheckpointError(f"{path}: not a native LTX-2 checkpoint (no "
                                      f"'{transformer_conv.NATIVE_PREFIX}patchify_proj.weight')")
            cfg = transformer_conv.config_from_checkpoint(source, str(path))
            where = str(path)
            connectors = converters.load(path, component="ltx2_connectors", dtype=dtype, progress=progress)
            vae = converters.load(path, component="ltx2_vae", dtype=vae_dtype, progress=progress)
            te_folder = tok_folder = Path(text_encoder)
        else:
            raise CheckpointError(f"{path}: no such folder or file (expected a diffusers LTX-2 folder or a native "
                                  "LTX-2 .safetensors file)")
        if upsampler not in (None, False, True):
            up_path = Path(upsampler)
            if not up_path.exists():
                raise InputError(f"upsampler {up_path}: no such file or folder")
        elif upsampler is True and up_path is None:
            raise InputError(f"{path}: has no latent_upsampler/ folder; pass the upsampler's path")
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(desc="loading LTX-2 transformer", unit="tensor", leave=False)
        shardings = None if mesh is None else mesh_shardings(transformer_conv, cfg, mesh)
        try:
            with sharded_loading(shardings):
                transformer = transformer_conv.load(source, cfg, where=where, dtype=dtype, progress=bar,
                                                    loras=loras, video_only=video_only or None)
        finally:
            if bar is not None:
                bar.close()
        te = converters.load(te_folder, dtype=text_dtype, progress=progress)
        tokenizer = Tokenizer.from_folder(tok_folder)
        loader = None
        if up_path is not None:
            def loader(p=up_path):
                return converters.load(p, component="ltx2_upsampler" if p.is_file() else None, dtype=dtype)
        return cls(transformer, connectors, te, tokenizer, vae, fps=fps, max_length=max_length,
                   upsampler_source=loader, mesh=mesh)

    @property
    def upsampler(self):
        """The latent upsampler (loaded on first use), or None when there is none."""
        if self._upsampler is None and self._upsampler_source is not None:
            self._upsampler = self._upsampler_source()
        return self._upsampler

    @property
    def latents_mean(self) -> jax.Array:
        return self.vae.latents_mean[...]

    @property
    def latents_std(self) -> jax.Array:
        return self.vae.latents_std[...]

    @property
    def vae_factors(self) -> tuple[int, int]:
        return self.vae.config.temporal_compression, self.vae.config.spatial_compression

    # -- stages ------------------------------------------------------------------------------------------------------

    def encode_prompt(self, prompt: str | Sequence[str]) -> LTX2TextEmbeddings:
        return encode_prompt(prompt, self.tokenizer, self._encode_text, max_length=self.max_length)

    def upsample(self, latents) -> jax.Array:
        up = self.upsampler
        if up is None:
            raise InputError("this refiner has no latent upsampler (a diffusers folder with latent_upsampler/, or "
                             "upsampler=PATH)")
        return upsample_latents(up, latents, self.latents_mean, self.latents_std)

    def refine(self, latents, text: LTX2TextEmbeddings, *, key=None, seed: int = 0, noise=None, audio_noise=None,
               upsample: bool = False, fps: float | None = None, sigmas: Sequence[float] = DISTILLED_SIGMAS,
               video_only: bool = False, progress: Callable[[int], None] | None = None) -> jax.Array:
        """:func:`refine_latents` with this pipeline's models; ``key`` defaults to ``jax.random.key(seed)``."""
        if key is None and (noise is None or audio_noise is None):
            key = jax.random.key(seed)
        out = refine_latents(self._dit, latents, text, key=key, noise=noise, audio_noise=audio_noise,
                             fps=fps or self.fps, sigmas=sigmas, upsampler=self.upsampler if upsample else None,
                             latents_mean=self.latents_mean, latents_std=self.latents_std, video_only=video_only,
                             progress=progress, mesh=self.mesh)
        return out if self.mesh is None else _gathered(out)

    def decode(self, latents, *, tile: int | None = None, frames_per_chunk: int | None = None,
               timestep: float = 0.0, noise_scale: float | None = None, key=None) -> np.ndarray:
        """Normalised latents → uint8 frames (B, T, H, W, 3) with the LTX-2 VAE (:func:`decode_latents`)."""
        return decode_latents((self._vae_graph, self.vae_params), latents, tile=tile,
                              frames_per_chunk=frames_per_chunk, timestep=timestep, noise_scale=noise_scale, key=key)

    def encode_video(self, frames, *, tile: int | None = None) -> jax.Array:
        """uint8 (T, H, W, 3) or (B, T, H, W, 3) frames (or float in [-1, 1]) → normalised latents."""
        v = np.asarray(frames)
        if v.dtype == np.uint8:
            v = v.astype(np.float32) / 127.5 - 1.0
        if v.ndim == 4:
            v = v[None]
        return _encode_jit(self._vae_graph, self.vae_params, jnp.asarray(v, jnp.float32),
                           tile=None if tile is None else tile * self.vae.config.spatial_compression)

    # -- the main call -----------------------------------------------------------------------------------------------

    def __call__(self, prompt: str | Sequence[str], latents, *, seed: int = 0, key=None, noise=None,
                 audio_noise=None, upsample: bool = False, fps: float | None = None,
                 sigmas: Sequence[float] = DISTILLED_SIGMAS, decode: bool = True, vae_tile: int | None = None,
                 frames_per_chunk: int | None = None, decode_timestep: float = 0.0,
                 decode_noise_scale: float | None = None, video_only: bool = False,
                 progress: bool = True) -> RefineOutput:
        """Refine normalised latents (B, T, H, W, C) with ``prompt`` (one per sample, or one for all)."""
        timings = {}
        start = time.perf_counter()
        with _bar(progress, 1, "LTX-2 text encoding") as bar:
            text = jax.block_until_ready(self.encode_prompt(prompt))
            bar.update()
        timings["refiner_text_encoding"] = time.perf_counter() - start
        if upsample:
            start = time.perf_counter()
            with _bar(progress, 1, "upsampling") as bar:
                latents = jax.block_until_ready(self.upsample(latents))
                bar.update()
            timings["upsampling"] = time.perf_counter() - start
        start = time.perf_counter()
        steps = len([s for s in sigmas if s != 0])
        with _bar(progress, steps, "refining") as bar:
            out = self.refine(latents, text, key=key, seed=seed, noise=noise, audio_noise=audio_noise, fps=fps,
                              sigmas=sigmas, video_only=video_only,
                              progress=(lambda _i: bar.update()) if progress else None)
            out = jax.block_until_ready(out)
        timings["refining"] = time.perf_counter() - start
        frames = None
        if decode:
            start = time.perf_counter()
            with _bar(progress, 1, "decoding") as bar:
                frames = self.decode(out, tile=vae_tile, frames_per_chunk=frames_per_chunk,
                                     timestep=decode_timestep, noise_scale=decode_noise_scale,
                                     key=None if key is None else jax.random.fold_in(key, 1))
                bar.update()
            timings["refiner_decoding"] = time.perf_counter() - start
        return RefineOutput(frames, np.asarray(out), timings, fps=int(fps or self.fps))


__all__ = ["RefineOutput", "RefinePipeline", "decode_latents", "load_latents", "refine_latents", "save_latents",
           "upsample_latents", "DEFAULT_FPS", "STAGE2_SIGMA0"]

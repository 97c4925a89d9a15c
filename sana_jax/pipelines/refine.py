"""``RefinePipeline``: the LTX-2 refiner, stage 2 of SANA-Video's 2K pipeline (docs/refiner.md): Gemma-3 +
connectors encode the prompt, the LTX-2 DiT (+ fused LoRA) refines normalised latents in 3 distilled Euler steps
(:mod:`sana_jax.pipelines.refine_loop`, where the maths is), the ×2 latent upsampler optionally goes first, and the
LTX-2 VAE decodes (:mod:`sana_jax.pipelines.ltx2_codec`).

:meth:`RefinePipeline.check` does every check that needs no weights (paths, LoRA files, the upsampler, the latent
channels and VAE factors the inputs must fit) and returns a :class:`RefinerPlan`; ``from_pretrained`` and the CLI
both start with it. All weights load through ``converters.load`` (LoRA fused while the transformer streams in).

**On a mesh** (``RefinePipeline.from_pretrained(..., mesh="tensor=2,context=4")``) the DiT weights are read shard
by shard straight onto the devices (logical-axis rules: heads/MLP over ``tensor``) and the refine loop runs with
video tokens over ``context`` and Ulysses self-attention. The text encoder, connectors, upsampler and VAE stay on
one device.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import numpy as np
from flax import nnx

import converters
from converters import ltx2_transformer, ltx2_vae
from converters.safetensors_io import open_safetensors
from sana_jax.errors import CheckpointError, InputError
from sana_jax.io.video import VideoOutput
from sana_jax.models.ltx2_transformer import STAGE2_SIGMA0, LTX2Transformer
from sana_jax.parallel.rules import shard_state
from sana_jax.pipelines.components import PipelineFolder, as_mesh, check_video_size
from sana_jax.pipelines.ltx2_codec import decode_latents, encode_frames
from sana_jax.pipelines.refine_loop import DEFAULT_FPS, check_latents, gathered, refine_latents, upsample_latents
from sana_jax.progress import progress_bar
from sana_jax.sampling import DISTILLED_SIGMAS
from sana_jax.text.ltx2_prompt import DEFAULT_MAX_LENGTH, LTX2TextEmbeddings, encode_prompt, prompt_encoder
from sana_jax.text.tokenizer import Tokenizer
from sana_jax.validate import check_finite

#: The converter family of each model in a native LTX-2 single file (a diffusers folder has one subfolder each).
NATIVE_FAMILIES = {"transformer": "ltx2_transformer", "connectors": "ltx2_connectors", "vae": "ltx2_vae"}


class RefineOutput(VideoOutput):
    """The refiner's :class:`~sana_jax.io.video.VideoOutput` (``latents``: the refined normalised latents)."""


@dataclasses.dataclass(frozen=True)
class RefinerPlan:
    """What :meth:`RefinePipeline.check` found without reading weights: where each model is, and what the inputs must
    fit (``channels`` of the latents, the VAE's (temporal, spatial) ``factors`` for a video)."""

    path: Path  # the diffusers LTX2Pipeline folder or the native LTX-2 .safetensors file (a Hub id resolved)
    folder: PipelineFolder | None  # None for a native single file
    loras: tuple[tuple[Path, float], ...]
    text_encoder: Path
    tokenizer: Path
    upsampler: Path | None
    channels: int
    factors: tuple[int, int]

    def model(self, name: str) -> dict:
        """``converters.load`` arguments for the refiner's ``transformer``, ``connectors`` or ``vae``."""
        if self.folder is not None:
            return {"path": self.folder.component(name)}
        return {"path": self.path, "component": NATIVE_FAMILIES[name]}

    def check_latents(self, shape: Sequence[int], where: str = "latents") -> None:
        """:func:`~sana_jax.pipelines.refine_loop.check_latents` against this refiner's latent channels."""
        check_latents(shape, self.channels, where)

    def check_frames(self, shape: Sequence[int], where: str = "video") -> None:
        """A (T, H, W, 3) video the LTX-2 VAE can encode: 1 + temporal·k frames, sides multiples of spatial."""
        if len(shape) != 4 or shape[-1] != 3:
            raise InputError(f"{where}: expected RGB video frames (T, H, W, 3), got shape {tuple(shape)}")
        try:
            check_video_size(shape[1], shape[2], shape[0], *self.factors)
        except InputError as e:
            raise InputError(f"{where} ({shape[0]} frames of {shape[2]}×{shape[1]}): "
                             f"{str(e).split(': ', 1)[-1]}") from e


def _lora_pairs(lora, strength) -> tuple[tuple[Path, float], ...]:
    """``lora`` (one path or several) with ``strength`` (one for all, or one each) as (path, strength) pairs."""
    if lora is None:
        return ()
    paths = [lora] if isinstance(lora, (str, Path)) else list(lora)
    strengths = [strength] * len(paths) if isinstance(strength, (int, float)) else list(strength)
    if len(strengths) != len(paths):
        raise InputError(f"{len(paths)} LoRA files but {len(strengths)} strengths")
    for p in paths:
        if not Path(p).is_file():
            raise InputError(f"--lora {p}: no such file")
    return tuple((Path(p), float(s)) for p, s in zip(paths, strengths))


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
        self.mesh = as_mesh(mesh)
        graphdef, params = nnx.split(transformer)
        if self.mesh is not None:  # DiT weights per the logical-axis rules (no-op when loaded onto the mesh)
            params = shard_state(params, self.mesh)
            nnx.update(transformer, params)  # the module holds the placed arrays too: no second copy
        self._dit = graphdef, params
        self._vae_graph, self.vae_params = nnx.split(vae)
        self._encode_text = prompt_encoder(text_encoder, connectors)

    # -- construction ------------------------------------------------------------------------------------------------

    @classmethod
    def check(cls, path: str | Path, *, lora=None, lora_strength: float | Sequence[float] = 1.0,
              text_encoder: str | Path | None = None, upsampler: str | Path | bool | None = None,
              local_files_only: bool = False) -> RefinerPlan:
        """Every check that needs no weights, with :meth:`from_pretrained`'s arguments (which see); reads only
        configs and safetensors headers. ``upsampler=True``: the folder's ``latent_upsampler/`` must exist.

        Raises:
          InputError: a LoRA, text-encoder or upsampler path that does not exist; a native file without
            ``text_encoder``; an upsampler asked for and none found.
          CheckpointError / ConfigError: a path that is no LTX-2 folder or native file, a missing component.
        """
        path = converters.resolve(path, local_files_only=local_files_only)
        loras = _lora_pairs(lora, lora_strength)
        if text_encoder is not None:
            text_encoder = converters.resolve(text_encoder, local_files_only=local_files_only)
            if not text_encoder.is_dir():
                raise InputError(f"--text-encoder {text_encoder}: no such folder (a Gemma-3 folder with its "
                                 "tokenizer)")
        if upsampler not in (None, False, True):
            upsampler = converters.resolve(upsampler, local_files_only=local_files_only)
            if not upsampler.exists():
                raise InputError(f"--upsampler {upsampler}: no such file or folder")
        if path.is_dir():
            folder = PipelineFolder.open(path)
            for name in NATIVE_FAMILIES:
                converters.weights_file(folder.component(name))
            channels = folder.config("transformer").get("in_channels", 128)
            factors = folder.vae_factors()
            te = text_encoder or folder.component("text_encoder")
            tokenizer = text_encoder or folder.component("tokenizer")
            default_upsampler = path / "latent_upsampler" if (path / "latent_upsampler").is_dir() else None
        elif path.is_file():
            folder = None
            if text_encoder is None:
                raise InputError(f"{path} is a native LTX-2 file, which holds no Gemma-3 text encoder: pass "
                                 "--text-encoder GEMMA3_FOLDER (text_encoder=; google/gemma-3-12b-it)")
            header = open_safetensors(path)  # names, shapes and metadata only
            if not ltx2_transformer.is_native_layout(header):
                raise CheckpointError(f"{path}: not a native LTX-2 checkpoint (no "
                                      f"'{ltx2_transformer.NATIVE_PREFIX}patchify_proj.weight')")
            channels = ltx2_transformer.config_from_checkpoint(header, str(path)).in_channels
            vae = ltx2_vae.config_from_checkpoint(header, str(path))
            factors = (vae.temporal_compression, vae.spatial_compression)
            te = tokenizer = text_encoder
            default_upsampler = None
        else:
            raise CheckpointError(f"{path}: no such folder or file (a diffusers LTX-2 folder, a native LTX-2 "
                                  ".safetensors file, or a Hub id)")
        if upsampler is True and default_upsampler is None:
            raise InputError(f"--upsample: {path} has no latent_upsampler/ folder; pass --upsampler PATH "
                             "(upsampler=)")
        if upsampler in (None, True):
            upsampler = default_upsampler
        return RefinerPlan(path, folder, loras, Path(te), Path(tokenizer), upsampler or None, channels,
                           tuple(factors))

    @classmethod
    def from_pretrained(cls, path: str | Path, *, lora=None, lora_strength: float | Sequence[float] = 1.0,
                        text_encoder: str | Path | None = None, upsampler: str | Path | bool | None = None,
                        dtype: str = "float32", text_dtype: str | None = None, vae_dtype: str = "float32",
                        video_only: bool = False, max_length: int = DEFAULT_MAX_LENGTH, fps: int = DEFAULT_FPS,
                        progress: bool = False, mesh=None, local_files_only: bool = False,
                        weights: str | None = None) -> "RefinePipeline":
        """Load the refiner (after :meth:`check`).

        Args:
          path: a diffusers ``LTX2Pipeline`` folder (``model_index.json`` with transformer, connectors, vae,
            text_encoder, tokenizer; ``latent_upsampler/`` beside them is used for ``--upsample``), or a native
            LTX-2 single file (``ltx-2-19b-dev.safetensors``: transformer, connectors and VAE; then
            ``text_encoder`` must name the Gemma-3 folder, which also holds the tokenizer), or a Hub id of such a
            folder (``converters.resolve``; ``local_files_only``: the local cache only).
          lora: LoRA file(s) fused into the transformer while its weights stream in (e.g.
            ``ltx-2-19b-distilled-lora-384.safetensors``, strength 1.0, SANA's recipe); ``lora_strength`` one
            strength for all or one each.
          text_encoder: a Gemma-3 folder (transformers layout, with its tokenizer) replacing the folder's own.
          upsampler: a latent-upsampler folder or file; ``None``: the folder's ``latent_upsampler/`` if it has one;
            ``True``: that folder, which must exist; ``False``: none. It is loaded on first use.
          dtype: transformer and connectors dtype (``bfloat16`` on GPU); ``text_dtype`` Gemma's (default: dtype);
            ``vae_dtype`` the VAE's.
          video_only: load without the audio stream and a↔v attention (13 B instead of 19 B parameters; an
            approximation of the stock refiner).
          mesh: a ``jax.sharding.Mesh`` or a spec string (``"tensor=2,context=4"``; ``sana_jax.parallel.make_mesh``):
            the transformer is loaded onto it (each device reads and receives only its shard of every weight) and
            refines with tokens over ``context`` and Ulysses self-attention (module docstring).
          weights: ``"fp8"`` / ``"int8"``: the transformer's and Gemma-3's Linear weights kept in 8 bits
            (``converters.load(weights=)``; an fp8 release keeps its own fp8 values); None: in ``dtype``.
        """
        plan = cls.check(path, lora=lora, lora_strength=lora_strength, text_encoder=text_encoder,
                         upsampler=upsampler, local_files_only=local_files_only)
        mesh = as_mesh(mesh)
        transformer = converters.load(**plan.model("transformer"), dtype=dtype, progress=progress, mesh=mesh,
                                      loras=plan.loras, video_only=video_only or None, weights=weights)
        connectors = converters.load(**plan.model("connectors"), dtype=dtype, progress=progress)
        vae = converters.load(**plan.model("vae"), dtype=vae_dtype, progress=progress)
        text = converters.load(plan.text_encoder, dtype=text_dtype or dtype, progress=progress, weights=weights)
        tokenizer = Tokenizer.from_folder(plan.tokenizer)
        upsampler_source = None if plan.upsampler is None else functools.partial(_load_upsampler, plan.upsampler,
                                                                                 dtype)
        return cls(transformer, connectors, text, tokenizer, vae, fps=fps, max_length=max_length,
                   upsampler_source=upsampler_source, mesh=mesh)

    def check_inputs(self, latents_shape: Sequence[int] | None = None, *, upsample: bool = False) -> None:
        """What :meth:`__call__` checks before any work: latents this transformer takes, an upsampler if asked."""
        if latents_shape is not None:
            check_latents(latents_shape, self.transformer.config.in_channels)
        if upsample and self._upsampler is None and self._upsampler_source is None:
            raise InputError("upsample=True, but this refiner has no latent upsampler (a diffusers folder with "
                             "latent_upsampler/, or upsampler=PATH)")


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
        """×2 spatial upsampling of normalised latents (:func:`upsample_latents` with this VAE's statistics)."""
        self.check_inputs(np.shape(latents), upsample=True)
        return upsample_latents(self.upsampler, latents, self.latents_mean, self.latents_std)

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
        return out if self.mesh is None else gathered(out)

    def decode(self, latents, *, tile: int | None = None, frames_per_chunk: int | None = None,
               timestep: float = 0.0, noise_scale: float | None = None, key=None) -> np.ndarray:
        """Normalised latents → uint8 frames (B, T, H, W, 3) with the LTX-2 VAE (:func:`decode_latents`)."""
        return decode_latents((self._vae_graph, self.vae_params), latents, tile=tile,
                              frames_per_chunk=frames_per_chunk, timestep=timestep, noise_scale=noise_scale, key=key)

    def encode_video(self, frames, *, tile: int | None = None) -> jax.Array:
        """uint8 (T, H, W, 3) or (B, T, H, W, 3) frames (or float in [-1, 1]) → normalised latents
        (:func:`encode_frames`)."""
        return encode_frames(self.vae, frames, tile=tile)

    # -- the main call -----------------------------------------------------------------------------------------------

    def __call__(self, prompt: str | Sequence[str], latents, *, seed: int = 0, key=None, noise=None,
                 audio_noise=None, upsample: bool = False, fps: float | None = None,
                 sigmas: Sequence[float] = DISTILLED_SIGMAS, decode: bool = True, vae_tile: int | None = None,
                 frames_per_chunk: int | None = None, decode_timestep: float = 0.0,
                 decode_noise_scale: float | None = None, video_only: bool = False,
                 progress: bool = True) -> RefineOutput:
        """Refine normalised latents (B, T, H, W, C) with ``prompt`` (one per sample, or one for all)."""
        self.check_inputs(np.shape(latents), upsample=upsample)
        timings = {}
        start = time.perf_counter()
        with progress_bar(progress, 1, "LTX-2 text encoding") as bar:
            text = jax.block_until_ready(self.encode_prompt(prompt))
            bar.update()
        timings["refiner_text_encoding"] = time.perf_counter() - start
        if upsample:
            start = time.perf_counter()
            with progress_bar(progress, 1, "upsampling") as bar:
                latents = jax.block_until_ready(self.upsample(latents))
                bar.update()
            timings["upsampling"] = time.perf_counter() - start
        start = time.perf_counter()
        steps = len([s for s in sigmas if s != 0])
        with progress_bar(progress, steps, "refining") as bar:
            out = self.refine(latents, text, key=key, seed=seed, noise=noise, audio_noise=audio_noise, fps=fps,
                              sigmas=sigmas, video_only=video_only,
                              progress=(lambda _i: bar.update()) if progress else None)
            out = jax.block_until_ready(out)
        latents_host = np.asarray(out)  # what the output holds; checked here, without a compiled reduction
        check_finite(latents_host, "refining")
        timings["refining"] = time.perf_counter() - start
        frames = None
        if decode:
            start = time.perf_counter()
            with progress_bar(progress, 1, "decoding") as bar:
                frames = self.decode(out, tile=vae_tile, frames_per_chunk=frames_per_chunk,
                                     timestep=decode_timestep, noise_scale=decode_noise_scale,
                                     key=None if key is None else jax.random.fold_in(key, 1))
                bar.update()
            timings["refiner_decoding"] = time.perf_counter() - start
        return RefineOutput(frames, latents_host, timings, fps=int(fps or self.fps))


def _load_upsampler(path: Path, dtype: str):
    """The ×2 latent upsampler from its folder or file (loaded on first use)."""
    return converters.load(path, component="ltx2_upsampler" if path.is_file() else None, dtype=dtype)


__all__ = ["NATIVE_FAMILIES", "RefineOutput", "RefinePipeline", "RefinerPlan", "decode_latents", "refine_latents",
           "upsample_latents", "DEFAULT_FPS", "STAGE2_SIGMA0"]

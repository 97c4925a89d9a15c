"""``SanaVideoPipeline``: prompt → Gemma-2 → SANA-Video DiT (one compiled denoising loop) → VAE → uint8 frames.

Glue only: the maths lives in ``models/``, ``vae/``, ``sampling/`` and ``text/``. Behaviour follows diffusers'
``SanaVideoPipeline`` (and ``SanaImageToVideoPipeline`` when an image is given): same prompt encoding, scheduler,
classifier-free guidance order, latent (de)normalisation and uint8 conversion, so the same initial noise gives the
same video. Differences: no resolution binning (sizes must be multiples of the VAE stride × patch; the error gives
the nearest valid ones), seeds are JAX PRNG keys, and the LTX-2 VAE is decoded at ``decode_timestep`` (0 by
default) when its decoder is timestep-conditioned.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import converters
from sana_jax.errors import ConfigError, InputError
from sana_jax.io.video import VideoOutput, to_uint8
from sana_jax.kernels.dispatch import linear_attention_mesh
from sana_jax.parallel.multihost import to_host
from sana_jax.models.sana_video import SanaVideoTransformer
from sana_jax.pipelines.components import (PipelineFolder, VAESpec, as_mesh, check_video_size, default_size,
                                           latent_frames)
from sana_jax.progress import progress_bar
from sana_jax.sampling import Schedule, dpm_flow_schedule, euler_flow_schedule, sample
from sana_jax.text.sana_prompt import encode_for_guidance
from sana_jax.text.tokenizer import Tokenizer
from sana_jax.validate import check_finite, check_integer, check_number, integer_problem, number_problem


#: Generation defaults of the released checkpoints (diffusers' ``SanaVideoPipeline``); a folder may override them
#: under ``_sana_jax`` in ``model_index.json`` (the embedded default model does). ``complex_human_instruction``
#: ``"style"`` means the prompt style's CHI prefix; None: no prefix. height/width None: by the DiT's sample size.
#: ``stream``: a distilled student's streaming settings (``chunk_frames``, ``timesteps``, ``shift``; written by
#: ``sana-jax train distill``, read by ``StreamingPipeline``); None: LongSANA's.
GENERATION_DEFAULTS = {"height": None, "width": None, "num_frames": 81, "num_inference_steps": 50,
                       "guidance_scale": 6.0, "fps": 16, "complex_human_instruction": "style",
                       "max_sequence_length": 300, "stream": None}


def generation_defaults(stored: dict | None) -> dict:
    """:data:`GENERATION_DEFAULTS` updated with a folder's stored ones; a :class:`ConfigError` for unknown keys."""
    if stored is not None and not isinstance(stored, dict):
        raise ConfigError(f"model_index.json _sana_jax must be an object of generation defaults, got {stored!r}")
    defaults = {**GENERATION_DEFAULTS, **(stored or {})}
    unknown = set(defaults) - set(GENERATION_DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown generation defaults {sorted(unknown)}; known: {sorted(GENERATION_DEFAULTS)}")
    for key, low in (("height", 1), ("width", 1), ("num_frames", 1), ("num_inference_steps", 1),
                     ("max_sequence_length", 1)):
        problem = None if defaults[key] is None else integer_problem(defaults[key], low)
        if problem:
            raise ConfigError(f"model_index.json _sana_jax.{key} {problem}")
    for key, low, low_open in (("guidance_scale", 0, False), ("fps", 0, True)):
        problem = number_problem(defaults[key], low, low_open=low_open)
        if problem:
            raise ConfigError(f"model_index.json _sana_jax.{key} {problem}")
    return defaults


def denoise_and_decode(pipe, latents, schedule: Schedule, cond, uncond, guidance_scale: float, *, timings: dict,
                       progress: bool, decode: bool, vae_tile: int | None, keep=None) -> tuple[np.ndarray | None,
                                                                                          np.ndarray]:
    """The compiled denoising loop of a pipeline (``pipe._model_fn`` on ``pipe.dit_params``) then, with ``decode``,
    ``pipe.decode``, each behind a progress bar and timed into ``timings``; the latents are checked finite on their
    host copy. Returns (uint8 frames or None, the latents on the host)."""
    start = time.perf_counter()
    with progress_bar(progress, schedule.num_steps, "denoising") as bar:
        out = sample(pipe._model_fn, pipe.dit_params, latents, schedule=schedule, cond=cond, uncond=uncond,
                     guidance_scale=guidance_scale, progress=(lambda _i: bar.update()) if progress else None,
                     keep=keep)
        out = jax.block_until_ready(out)
    latents_host = to_host(out)  # what the output holds (from every host); checked without a compiled reduction
    check_finite(latents_host, "denoising")
    timings["denoising"] = time.perf_counter() - start
    frames = None
    if decode:
        start = time.perf_counter()
        with progress_bar(progress, 1, "decoding") as bar:  # the VAE decodes on one device of each process
            frames = pipe.decode(out if out.is_fully_addressable else latents_host, tile=vae_tile)
            bar.update()
        timings["decoding"] = time.perf_counter() - start
    return frames, latents_host


@dataclasses.dataclass(frozen=True)
class GenerationRequest:
    """A checked request: sizes, frames, steps and guidance with the checkpoint's defaults filled in."""

    height: int
    width: int
    num_frames: int
    num_inference_steps: int
    guidance_scale: float
    latent_frames: int


def check_request(defaults: dict, size: tuple[int, int], vae: VAESpec, patch: Sequence[int], *, height=None,
                  width=None, num_frames=None, num_inference_steps=None, guidance_scale=None,
                  image=None) -> GenerationRequest:
    """The checks of :meth:`SanaVideoPipeline.check` on what they need: the generation ``defaults``, the default
    ``size``, the VAE's frame rule and the DiT's patch."""
    # a value given is honoured or refused, never replaced by the default (0 is not "unset")
    num_frames = defaults["num_frames"] if num_frames is None else check_integer("num_frames", num_frames, 1)
    steps = (defaults["num_inference_steps"] if num_inference_steps is None
             else check_integer("num_inference_steps", num_inference_steps, 1))
    guidance = (defaults["guidance_scale"] if guidance_scale is None
                else check_number("guidance_scale", guidance_scale, 0))
    height = size[0] if height is None else check_integer("height", height, 1)
    width = size[1] if width is None else check_integer("width", width, 1)
    check_video_size(height, width, num_frames, vae.temporal, vae.spatial, tuple(patch),
                     causal_first_frame=vae.causal_first_frame)
    if isinstance(image, (str, Path)):
        if not Path(image).is_file():
            raise InputError(f"--image {image}: no such file")
    elif image is not None:
        shape = np.shape(image)
        if len(shape) != 3 or shape[-1] != 3:
            raise InputError(f"image must be (H, W, 3), got shape {shape}")
        if shape[:2] != (height, width):
            raise InputError(f"image is {shape[1]}×{shape[0]}, the video {width}×{height}: resize it first "
                             "(the CLI does this for --image)")
    return GenerationRequest(height, width, num_frames, steps, guidance,
                             latent_frames(num_frames, vae.temporal, vae.causal_first_frame))


def check_folder(folder: PipelineFolder) -> None:
    """What loading a SANA-Video folder needs, from its configs alone: every component with its weights file, a
    supported VAE class and scheduler."""
    for name in ("transformer", "vae", "text_encoder"):
        converters.weights_file(folder.component(name))
    folder.component("tokenizer")
    folder.vae_spec()
    schedule_from_config(folder.config("scheduler", "scheduler_config.json"), 2)


class SanaVideoOutput(VideoOutput):
    """SANA-Video's :class:`~sana_jax.io.video.VideoOutput`."""



def schedule_from_config(config: dict, num_steps: int) -> Schedule:
    """The sampler schedule of a diffusers ``scheduler_config.json`` (the two SANA-Video uses)."""
    if not isinstance(config, dict):
        raise ConfigError(f"scheduler_config.json must be a JSON object, got {type(config).__name__}")
    cls = config.get("_class_name")
    problem = integer_problem(config.get("num_train_timesteps", 1000), 1)
    if problem:
        raise ConfigError(f"scheduler_config.json num_train_timesteps {problem}")
    for key in ("flow_shift", "shift"):
        problem = number_problem(config.get(key, 1.0), 0, low_open=True)
        if problem:
            raise ConfigError(f"scheduler_config.json {key} {problem}")
    if cls == "DPMSolverMultistepScheduler":
        if not config.get("use_flow_sigmas") or config.get("prediction_type") != "flow_prediction":
            raise ConfigError("DPMSolverMultistepScheduler must use flow sigmas and flow_prediction for SANA-Video")
        if config.get("solver_order", 2) != 2 or config.get("algorithm_type", "dpmsolver++") != "dpmsolver++":
            raise ConfigError("only the order-2 dpmsolver++ flow solver is supported")
        return dpm_flow_schedule(num_steps, shift=float(config.get("flow_shift", 8.0)),
                                 num_train_timesteps=config.get("num_train_timesteps", 1000))
    if cls == "FlowMatchEulerDiscreteScheduler":
        if config.get("use_dynamic_shifting"):
            raise ConfigError("FlowMatchEulerDiscreteScheduler with use_dynamic_shifting is not supported")
        return euler_flow_schedule(num_steps, shift=float(config.get("shift", 1.0)),
                                   num_train_timesteps=config.get("num_train_timesteps", 1000))
    raise ConfigError(f"scheduler {cls!r} is not supported (DPMSolverMultistepScheduler, "
                      "FlowMatchEulerDiscreteScheduler)")


class SanaVideoPipeline:
    """Text-to-video (and image-to-video) with SANA-Video. Build with :meth:`from_pretrained`."""

    def __init__(self, transformer: SanaVideoTransformer, vae, text_encoder, tokenizer: Tokenizer,
                 scheduler_config: dict, *, prompt_style: str = "diffusers", fps: int | None = None, mesh=None,
                 defaults: dict | None = None):
        self.transformer, self.vae, self.text_encoder, self.tokenizer = transformer, vae, text_encoder, tokenizer
        self.defaults = generation_defaults(defaults)
        self.fps = self.defaults["fps"] if fps is None else fps
        self.scheduler_config, self.prompt_style, self.mesh = scheduler_config, prompt_style, mesh
        self._dit_graph, self.dit_params = nnx.split(transformer)
        self._text_graph, self.text_params = nnx.split(text_encoder)
        self._vae_graph, self.vae_params = nnx.split(vae)
        dit_graph = self._dit_graph
        tokens = None
        # DiT weights per the logical-axis rules; batch (CFG halves) over data, frames over context
        if mesh is not None:
            from jax.sharding import NamedSharding, PartitionSpec

            from sana_jax.parallel.rules import shard_state

            self.dit_params = shard_state(self.dit_params, mesh)
            tokens = NamedSharding(mesh, PartitionSpec("data", "context"))

        def model_fn(params, x, t, cond):  # one object for the pipeline's life: the loop compiles once per shape
            model = nnx.merge(dit_graph, params)
            timestep = t[:, None] * cond["t_scale"] if "t_scale" in cond else t
            if tokens is None:
                return model(x.astype(model.dtype), cond["text"], timestep, cond["mask"])
            x = jax.lax.with_sharding_constraint(x, tokens)
            with linear_attention_mesh(mesh):  # the linear-attention kernel runs sharded (sana_jax.parallel.dit)
                return model(x.astype(model.dtype), cond["text"], timestep, cond["mask"])

        self._model_fn = model_fn
        text_graph = self._text_graph
        self._encode_text = jax.jit(lambda p, ids, mask: nnx.merge(text_graph, p)(ids, mask))
        self._decode = jax.jit(self._decode_impl, static_argnames=("tile",))
        self._encode_image = jax.jit(lambda p, x: nnx.merge(self._vae_graph, p).encode_for_pipeline(x))
        self._encode_video = self._encode_image

    # -- construction ------------------------------------------------------------------------------------------------

    @classmethod
    def check(cls, folder: str | Path | PipelineFolder, *, height: int | None = None, width: int | None = None,
              num_frames: int | None = None, num_inference_steps: int | None = None,
              guidance_scale: float | None = None, image=None, local_files_only: bool = False,
              dtype: str = "float32", vae_dtype: str = "float32", vae_tile: int | None = None, mesh=None,
              memory: bool = True, weights: str | None = None) -> GenerationRequest:
        """Every check that needs no weights, from the folder's configs: the request as :meth:`__call__` takes it
        (sizes and frames against the VAE's frame rule and the DiT's patch; ``image`` a path that exists or an
        array (height, width, 3)), then the folder's components, VAE and scheduler (:func:`check_folder`), then
        (``memory``) that the run fits in what the device has: its peak estimated from the configs for ``dtype``,
        ``vae_dtype``, ``vae_tile``, ``mesh`` and ``weights`` as :meth:`from_pretrained` and :meth:`__call__` take them
        (:func:`sana_jax.pipelines.memory.check_generation`: an InputError with the options that fit; it starts
        JAX's backend, so a multi-host run calls it after ``jax.distributed.initialize``).
        Arguments left None take the folder's defaults; the returned :class:`GenerationRequest` has them filled
        in."""
        pf = folder if isinstance(folder, PipelineFolder) else PipelineFolder.open(folder,
                                                                                 local_files_only=local_files_only)
        request = check_request(generation_defaults(pf.defaults()), pf.default_size(), pf.vae_spec(),
                                pf.patch_size(), height=height, width=width, num_frames=num_frames,
                                num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, image=image)
        check_folder(pf)
        if memory:
            from sana_jax.pipelines.memory import check_folder_generation

            check_folder_generation(pf, num_frames=request.num_frames, height=request.height, width=request.width,
                                    guidance_scale=request.guidance_scale, dtype=dtype, vae_dtype=vae_dtype,
                                    vae_tile=vae_tile, mesh=mesh, weights=weights)
        return request

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, dtype: str = "float32", vae_dtype: str = "float32",
                        mesh=None, prompt_style: str = "diffusers", progress: bool = False,
                        local_files_only: bool = False, weights: str | None = None) -> "SanaVideoPipeline":
        """Load a diffusers ``SanaVideoPipeline`` folder (``model_index.json`` with transformer, vae, text_encoder,
        tokenizer, scheduler), or its Hub id (``Efficient-Large-Model/SANA-Video_2B_480p_diffusers``: the Hugging
        Face cache, downloaded unless ``local_files_only`` or ``HF_HUB_OFFLINE``). ``dtype`` applies to the
        transformer and the text encoder; the VAE runs in ``vae_dtype`` (float32 as diffusers does for Wan).
        ``mesh`` (``sana_jax.parallel.make_mesh``, or a spec string such as ``"data=2,context=4"``) runs the DiT
        sharded: weights per the logical-axis rules, the classifier-free-guidance batch over ``data``, latent
        frames over ``context``. ``weights`` (``"fp8"`` / ``"int8"``) keeps the transformer's and the text encoder's
        Linear weights in 8 bits (``converters.load(weights=)``). Sizes are checked per call (:meth:`check`)."""
        mesh = as_mesh(mesh)
        pf = PipelineFolder.open(folder, local_files_only=local_files_only)
        check_folder(pf)  # fail before loading anything
        transformer = converters.load(pf.component("transformer"), dtype=dtype, progress=progress, weights=weights)
        vae = converters.load(pf.component("vae"), dtype=vae_dtype, progress=progress)
        text_encoder = converters.load(pf.component("text_encoder"), dtype=dtype, progress=progress, weights=weights)
        tokenizer = Tokenizer.from_folder(pf.component("tokenizer"))
        scheduler = pf.config("scheduler", "scheduler_config.json")
        return cls(transformer, vae, text_encoder, tokenizer, scheduler, prompt_style=prompt_style, mesh=mesh,
                   defaults=pf.defaults())

    # -- stages ------------------------------------------------------------------------------------------------------

    @property
    def vae_factors(self) -> tuple[int, int]:
        """(temporal, spatial) compression of the VAE. Every VAE here implements the pipeline protocol:
        ``compression``, ``causal_first_frame`` (frames = 1 + t·k, else t·k), ``latent_frames(num_frames)``,
        ``encode_for_pipeline(video)`` and ``decode_for_pipeline(latents, tile=)`` on normalised latents."""
        return tuple(self.vae.compression)

    def default_size(self) -> tuple[int, int]:
        return default_size(self.transformer.config.sample_size, self.defaults)

    def check_inputs(self, **request) -> GenerationRequest:
        """:meth:`check`'s request checks (``height``, ``width``, ``num_frames``, ``num_inference_steps``,
        ``guidance_scale``, ``image``) against the loaded models; what :meth:`__call__` does first."""
        vae = VAESpec(*self.vae.compression, self.vae.causal_first_frame)
        return check_request(self.defaults, self.default_size(), vae, self.transformer.config.patch_size, **request)

    def encode_prompt(self, prompts: Sequence[str], negative_prompts: Sequence[str] | None, *,
                      motion_score: int | None = None):
        """(cond, uncond) dicts of text embeddings and masks; ``uncond`` is None without guidance."""
        def text_fn(ids, mask):
            return self._encode_text(self.text_params, jnp.asarray(ids), jnp.asarray(mask))

        embeds, mask, neg, neg_mask = encode_for_guidance(
            prompts, negative_prompts, self.tokenizer, text_fn, style=self.prompt_style, motion_score=motion_score,
            max_sequence_length=self.defaults["max_sequence_length"], chi=self.defaults["complex_human_instruction"])
        cond = {"text": jnp.asarray(embeds), "mask": jnp.asarray(mask)}
        uncond = None if neg is None else {"text": jnp.asarray(neg), "mask": jnp.asarray(neg_mask)}
        return cond, uncond

    def latent_shape(self, batch: int, num_frames: int, height: int, width: int) -> tuple[int, ...]:
        _, s = self.vae_factors
        return (batch, self.vae.latent_frames(num_frames), height // s, width // s,
                self.transformer.config.in_channels)

    def _decode_impl(self, params, latents, tile=None):
        return nnx.merge(self._vae_graph, params).decode_for_pipeline(latents, tile=tile)

    def encode_video(self, video) -> jax.Array:
        """Video (B, T, H, W, 3) float in [-1, 1] → normalised latents (the posterior mean), as training uses them."""
        return self._encode_video(self.vae_params, jnp.asarray(video, jnp.float32))

    def decode(self, latents, *, tile: int | None = None) -> np.ndarray:
        """Normalised latents → uint8 frames (B, T, H, W, 3)."""
        video = np.asarray(self._decode(self.vae_params, jnp.asarray(latents), tile=tile))  # to_uint8 runs on it
        check_finite(video, "VAE decoding")
        return to_uint8(video)

    # -- the main call -----------------------------------------------------------------------------------------------

    def __call__(self, prompt: str | Sequence[str], *, negative_prompt: str | Sequence[str] = "",
                 height: int | None = None, width: int | None = None, num_frames: int | None = None,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None, seed: int = 0,
                 latents=None, image=None, motion_score: int | None = None, decode: bool = True,
                 vae_tile: int | None = None, progress: bool = True) -> SanaVideoOutput:
        """Generate a video. ``latents`` (B, T', H', W', C), if given, is the initial noise (else drawn from
        ``seed``); ``image`` (H, W, 3) uint8 or float in [-1, 1] makes it image-to-video (frame 0 = the image).
        Sizes, frames, steps and guidance left as None take the checkpoint's defaults (:attr:`defaults`)."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        req = self.check_inputs(height=height, width=width, num_frames=num_frames,
                                num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, image=image)
        height, width, num_frames = req.height, req.width, req.num_frames
        num_inference_steps, guidance_scale = req.num_inference_steps, req.guidance_scale
        negatives = None
        if guidance_scale != 1.0:
            negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
            if len(negatives) != len(prompts):
                raise InputError(f"{len(negatives)} negative prompts for {len(prompts)} prompts")
        timings = {}

        start = time.perf_counter()
        with progress_bar(progress, 1, "text encoding") as bar:
            cond, uncond = self.encode_prompt(prompts, negatives, motion_score=motion_score)
            jax.block_until_ready(cond)
            bar.update()
        timings["text_encoding"] = time.perf_counter() - start

        shape = self.latent_shape(len(prompts), num_frames, height, width)
        if self.mesh is not None:
            from sana_jax.parallel.dit import check_divisible

            check_divisible(shape[0] * (2 if negatives is not None else 1), shape[1], self.mesh)
        if latents is None:
            latents = jax.random.normal(jax.random.key(seed), shape, jnp.float32)
        elif tuple(np.shape(latents)) != shape:
            raise InputError(f"latents must have shape {shape} for this size, got {tuple(np.shape(latents))}")
        latents = jnp.asarray(latents, jnp.float32)
        keep = None
        if image is not None:
            latents, keep = self._condition_on_image(image, latents, cond, uncond)

        schedule = schedule_from_config(self.scheduler_config, num_inference_steps)
        frames, latents_host = denoise_and_decode(self, latents, schedule, cond, uncond, guidance_scale,
                                                  timings=timings, progress=progress, decode=decode,
                                                  vae_tile=vae_tile, keep=keep)
        return SanaVideoOutput(frames, latents_host, timings, fps=self.fps)

    def _condition_on_image(self, image, latents, cond, uncond):
        """Image-to-video as ``SanaImageToVideoPipeline``: the image's latent (posterior mean, normalised) replaces
        latent frame 0, which then sees timestep 0 and is kept fixed by the solver. With DC-AE-V (no causal first
        frame) latent frame 0 stands for the first ``t`` frames: the VAE encodes the image repeated ``t`` times."""
        img = np.asarray(image)  # (height, width, 3): checked by check_inputs
        if img.dtype == np.uint8:
            img = img.astype(np.float32) / 127.5 - 1.0
        z0 = self._encode_image(self.vae_params, jnp.asarray(img, jnp.float32)[None, None])[:, :1]
        latents = latents.at[:, :1].set(jnp.broadcast_to(z0, latents[:, :1].shape))
        t_scale = jnp.ones(latents.shape[:2], jnp.float32).at[:, 0].set(0.0)
        cond["t_scale"] = t_scale
        if uncond is not None:
            uncond["t_scale"] = t_scale
        frame0 = jnp.zeros(latents.shape[1], bool).at[0].set(True)
        return latents, (frame0[None, :, None, None, None], latents)

"""``WanPipeline``: prompt → UMT5 → Wan2.1 DiT (one compiled denoising loop) → Wan VAE → uint8 frames.

Glue only, as :mod:`sana_jax.pipelines.text_to_video` is for SANA-Video: the maths lives in ``models/wan.py``,
``models/umt5.py``, ``vae/wan.py``, ``sampling/`` and ``text/wan_prompt.py``. Behaviour follows diffusers' Wan2.1
text-to-video pipeline (``WanPipeline.__call__`` in
``huggingface/diffusers:src/diffusers/pipelines/wan/pipeline_wan.py``), so the same initial noise gives the same
video:

* prompts cleaned, tokenised to 512 tokens, UMT5-encoded, rows after each prompt set to zero
  (:func:`sana_jax.text.wan_prompt.encode_wan_prompts`); the negative prompt defaults to ``""`` (diffusers'
  ``negative_prompt or ""``; Wan's own ``generate.py`` uses :data:`~sana_jax.text.wan_prompt.WAN_NEGATIVE_PROMPT`);
* classifier-free guidance ``v = v_u + g·(v_c − v_u)`` only when ``g > 1`` (diffusers'
  ``do_classifier_free_guidance``);
* the folder's scheduler: ``UniPCMultistepScheduler`` with flow sigmas (:func:`~sana_jax.sampling.unipc_flow_schedule`;
  the model sees the int64-truncated timestep, the solver the exact σ) or ``FlowMatchEulerDiscreteScheduler``;
* latents normalised with the VAE's ``latents_mean`` / ``latents_std`` (:class:`~sana_jax.vae.wan.WanVAE` inverts
  them before decoding, as diffusers' ``latents / (1 / std) + mean``), decoded clamped to [-1, 1], then uint8.

Differences: sizes and frame counts are refused with the nearest valid ones instead of being rounded with a warning,
seeds are JAX PRNG keys, and only Wan2.1 folders load (no Wan2.2 ``transformer_2`` / ``boundary_ratio`` /
``expand_timesteps``, no image-to-video).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import converters
from converters.hub import resolve
from sana_jax.errors import ConfigError, InputError
from sana_jax.io.video import VideoOutput, to_uint8
from sana_jax.models.wan import DIFFUSERS_CLASS as TRANSFORMER_CLASS
from sana_jax.models.wan import WanConfig, WanTransformer
from sana_jax.pipelines.components import PipelineFolder, VAESpec, as_mesh
from sana_jax.pipelines.text_to_video import (GenerationRequest, check_request, denoise_and_decode,
                                              schedule_from_config)
from sana_jax.pipelines.wan_components import PIPELINE_CLASS, WanFolder
from sana_jax.progress import progress_bar
from sana_jax.sampling import Schedule, unipc_flow_schedule
from sana_jax.text.tokenizer import Tokenizer
from sana_jax.text.wan_prompt import DEFAULT_MAX_LENGTH, encode_wan_prompts, prompt_encoder
from sana_jax.validate import check_finite, integer_problem, number_problem
from sana_jax.vae import wan as wan_vae

#: the scheduler of an original-layout folder (no scheduler/): Wan's own sampler for text-to-video, flow UniPC at
#: shift 5 (``Wan-Video/Wan2.1:generate.py`` ``sample_shift``), on diffusers' σ grid
ORIGINAL_SCHEDULER = {"_class_name": "UniPCMultistepScheduler", "prediction_type": "flow_prediction",
                      "use_flow_sigmas": True, "flow_shift": 5.0, "num_train_timesteps": 1000}
#: ``WanPipeline.__call__``'s defaults (480×832, 81 frames, 50 steps, guidance 5, 512 text tokens) and Wan's 16 fps.
WAN_DEFAULTS = {"height": 480, "width": 832, "num_frames": 81, "num_inference_steps": 50, "guidance_scale": 5.0,
                "fps": 16, "max_sequence_length": DEFAULT_MAX_LENGTH}
#: UniPC settings the flow solver of :mod:`sana_jax.sampling.unipc` implements: key → (value, diffusers' default).
UNIPC_SETTINGS = {"prediction_type": ("flow_prediction", "epsilon"), "use_flow_sigmas": (True, False),
                  "solver_order": (2, 2), "solver_type": ("bh2", "bh2"), "predict_x0": (True, True),
                  "lower_order_final": (True, True), "disable_corrector": ([], []),
                  "final_sigmas_type": ("zero", "zero"),
                  "thresholding": (False, False), "use_karras_sigmas": (False, False),
                  "use_exponential_sigmas": (False, False), "use_beta_sigmas": (False, False),
                  "use_dynamic_shifting": (False, False), "shift_terminal": (None, None), "solver_p": (None, None)}


def wan_schedule(config: dict, num_steps: int) -> Schedule:
    """The sampler schedule of a Wan folder's ``scheduler/scheduler_config.json``: ``UniPCMultistepScheduler``
    (flow sigmas, flow_prediction, order 2, bh2; the Wan default) → :func:`~sana_jax.sampling.unipc_flow_schedule`,
    ``FlowMatchEulerDiscreteScheduler`` → :func:`~sana_jax.sampling.euler_flow_schedule`; a :class:`ConfigError`
    naming the key for anything else."""
    if not isinstance(config, dict):
        raise ConfigError(f"scheduler_config.json must be a JSON object, got {type(config).__name__}")
    cls = config.get("_class_name")
    if cls == "FlowMatchEulerDiscreteScheduler":
        return schedule_from_config(config, num_steps)
    if cls != "UniPCMultistepScheduler":
        raise ConfigError(f"scheduler {cls!r} is not supported for Wan2.1 (UniPCMultistepScheduler, "
                          "FlowMatchEulerDiscreteScheduler)")
    for key, (want, default) in UNIPC_SETTINGS.items():
        if config.get(key, default) != want:
            raise ConfigError(f"scheduler_config.json {key} {config.get(key, default)!r}: only {want!r} is supported "
                              "(the flow UniPC of Wan2.1)")
    for key, problem in (("num_train_timesteps", integer_problem(config.get("num_train_timesteps", 1000), 1)),
                         ("flow_shift", number_problem(config.get("flow_shift", 1.0), 0, low_open=True))):
        if problem:
            raise ConfigError(f"scheduler_config.json {key} {problem}")
    return unipc_flow_schedule(num_steps, shift=float(config.get("flow_shift", 1.0)),
                               num_train_timesteps=config.get("num_train_timesteps", 1000))


def check_index(folder: PipelineFolder) -> None:
    """A :class:`ConfigError` unless ``model_index.json`` is a Wan2.1 ``WanPipeline``'s: no Wan2.2 extras, a
    ``WanTransformer3DModel`` and an ``AutoencoderKLWan``."""
    where = folder.root / "model_index.json"
    if folder.index.get("_class_name") != PIPELINE_CLASS:
        raise ConfigError(f"{where}: _class_name {folder.index.get('_class_name')!r} is not {PIPELINE_CLASS!r}")
    extra = folder.index.get("transformer_2")
    if folder.index.get("boundary_ratio") is not None or (isinstance(extra, list) and extra[0] is not None):
        raise ConfigError(f"{where}: a two-expert Wan2.2 folder (transformer_2, boundary_ratio) is not supported; "
                          "Wan2.1 folders are")
    if folder.index.get("expand_timesteps"):
        raise ConfigError(f"{where}: expand_timesteps (Wan2.2 TI2V) is not supported; Wan2.1 folders are")
    for name, want in (("transformer", TRANSFORMER_CLASS), ("vae", wan_vae.DIFFUSERS_CLASS)):
        if folder.class_name(name) != want:
            raise ConfigError(f"{where}: {name} class {folder.class_name(name)!r} is not {want!r}")


def check_folder(folder: PipelineFolder) -> None:
    """What loading a Wan2.1 folder needs, from its configs alone: :func:`check_index`, a transformer config this
    package implements (text-to-video), every component with its weights file, and a supported scheduler."""
    check_index(folder)
    WanConfig.from_diffusers(folder.config("transformer"), str(folder.component("transformer") / "config.json"))
    for name in ("transformer", "vae", "text_encoder"):
        converters.weights_file(folder.component(name))
    folder.component("tokenizer")
    folder.vae_spec()
    wan_schedule(folder.config("scheduler", "scheduler_config.json"), 2)


def _wan_request(vae: VAESpec, patch, **request) -> GenerationRequest:
    """The request checks of :meth:`WanPipeline.check` (sizes and frames against the VAE's rule and the DiT's patch;
    steps ≥ 1, guidance ≥ 0), Wan's defaults filled in."""
    size = (WAN_DEFAULTS["height"], WAN_DEFAULTS["width"])
    return check_request(WAN_DEFAULTS, size, vae, tuple(patch), **request)


class WanPipeline:
    """Wan2.1 text-to-video. Build with :meth:`from_pretrained`; call with a prompt (``__call__``)."""

    def __init__(self, transformer: WanTransformer, vae, text_encoder, tokenizer: Tokenizer, scheduler_config: dict,
                 *, mesh=None, fps: int = WAN_DEFAULTS["fps"]):
        self.transformer, self.vae, self.text_encoder, self.tokenizer = transformer, vae, text_encoder, tokenizer
        self.scheduler_config, self.mesh, self.fps = scheduler_config, mesh, fps
        self.defaults = dict(WAN_DEFAULTS)
        wan_schedule(scheduler_config, 1)  # refuse an unsupported scheduler now, not at the first call
        dit_graph, self.dit_params = nnx.split(transformer)
        self._vae_graph, self.vae_params = nnx.split(vae)
        tokens = None
        if mesh is not None:  # DiT weights per the logical-axis rules; the CFG batch over data, frames over context
            from jax.sharding import NamedSharding, PartitionSpec

            from sana_jax.parallel.rules import shard_state

            self.dit_params = shard_state(self.dit_params, mesh)
            tokens = NamedSharding(mesh, PartitionSpec("data", "context"))

        def model_fn(params, x, t, cond):  # one object for the pipeline's life: the loop compiles once per shape
            model = nnx.merge(dit_graph, params)
            if tokens is not None:
                x = jax.lax.with_sharding_constraint(x, tokens)
            return model(x.astype(model.dtype), cond["text"], t)

        self._model_fn = model_fn
        self._encode_text = prompt_encoder(text_encoder)
        self._decode = jax.jit(self._decode_impl, static_argnames=("tile",))

    # -- construction ------------------------------------------------------------------------------------------------

    @classmethod
    def check(cls, folder: str | Path | PipelineFolder, *, height: int | None = None, width: int | None = None,
              num_frames: int | None = None, num_inference_steps: int | None = None,
              guidance_scale: float | None = None, local_files_only: bool = False) -> GenerationRequest:
        """Every check that needs no weights, from the folder's configs: the request (sizes and frames against the
        VAE's frame rule — 1 + 4k frames — and the DiT's patch: multiples of 16 px), then the folder
        (:func:`check_folder`). Arguments left None take diffusers' defaults (480×832, 81 frames, 50 steps, guidance
        5); the returned :class:`GenerationRequest` has them filled in.

        No memory estimate: :mod:`sana_jax.pipelines.memory` is calibrated on SANA-Video's linear-attention DiT and
        Gemma-2, and a Wan DiT (softmax attention over every token) or UMT5 would be mis-estimated."""
        if not isinstance(folder, PipelineFolder):
            root = resolve(folder, local_files_only=local_files_only)
            if WanFolder.open(root).layout == "original":
                patch = WanConfig.from_json(root / "config.json").patch_size
                return _wan_request(VAESpec(4, 8, True), patch, height=height, width=width, num_frames=num_frames,
                                    num_inference_steps=num_inference_steps, guidance_scale=guidance_scale)
            folder = PipelineFolder.open(root)
        pf = folder
        check_index(pf)
        request = _wan_request(pf.vae_spec(), pf.patch_size(), height=height, width=width, num_frames=num_frames,
                               num_inference_steps=num_inference_steps, guidance_scale=guidance_scale)
        check_folder(pf)
        return request

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, dtype: str = "float32", vae_dtype: str = "float32", mesh=None,
                        progress: bool = False, local_files_only: bool = False,
                        weights: str | None = None) -> "WanPipeline":
        """Load a diffusers ``WanPipeline`` folder (``Wan-AI/Wan2.1-T2V-1.3B-Diffusers`` /
        ``Wan-AI/Wan2.1-T2V-14B-Diffusers`` layout: ``transformer/``, ``vae/``, ``text_encoder/`` (UMT5),
        ``tokenizer/``, ``scheduler/``), an original Wan2.1 folder (``Wan-AI/Wan2.1-T2V-1.3B``: config.json and
        safetensors, ``models_t5_umt5-xxl-enc-bf16.pth``, ``Wan2.1_VAE.pth``, ``google/umt5-xxl/``; sampled with
        :data:`ORIGINAL_SCHEDULER`), or a Hub id (the Hugging Face cache; downloaded unless
        ``local_files_only`` or ``HF_HUB_OFFLINE``). ``dtype`` applies to the transformer and the text encoder (the
        DiT keeps its time embedding, modulation, norms and residual stream in float32, as the original Wan does);
        the VAE runs in ``vae_dtype`` (float32 as diffusers' example). ``mesh`` (a ``jax.sharding.Mesh`` or a spec
        such as ``"data=2,context=2"``) runs the DiT sharded as ``SanaVideoPipeline`` does. ``weights`` (``"fp8"`` /
        ``"int8"``): the DiT's and UMT5's Linear weights in 8 bits. Sizes are checked per call."""
        mesh = as_mesh(mesh)
        parts = WanFolder.open(resolve(folder, local_files_only=local_files_only))
        if parts.layout == "diffusers":
            check_folder(PipelineFolder.open(parts.root))  # fail before loading anything
        scheduler = parts.scheduler_config() or ORIGINAL_SCHEDULER
        bar = progress_bar(progress, total=4, desc="loading Wan2.1", unit="part")
        transformer = parts.load_transformer(dtype, weights=weights)
        bar.update()
        vae = parts.load_vae(vae_dtype)
        bar.update()
        text_encoder, tokenizer = parts.load_text_encoder(dtype, weights), parts.load_tokenizer()
        bar.update(2)
        bar.close()
        return cls(transformer, vae, text_encoder, tokenizer, scheduler, mesh=mesh)

    # -- stages ------------------------------------------------------------------------------------------------------

    def check_inputs(self, **request) -> GenerationRequest:
        """:meth:`check`'s request checks (``height``, ``width``, ``num_frames``, ``num_inference_steps``,
        ``guidance_scale``) against the loaded models; what :meth:`__call__` does first."""
        vae = VAESpec(*self.vae.compression, self.vae.causal_first_frame)
        return _wan_request(vae, self.transformer.config.patch_size, **request)

    def encode_prompt(self, prompts: Sequence[str], negative_prompts: Sequence[str] | None):
        """(cond, uncond): ``{"text": (B, 512, 4096)}`` UMT5 contexts, zero after each prompt; ``uncond`` is None
        when ``negative_prompts`` is (no guidance)."""
        length = self.defaults["max_sequence_length"]
        cond = {"text": encode_wan_prompts(list(prompts), self.tokenizer, self._encode_text, length)}
        if negative_prompts is None:
            return cond, None
        return cond, {"text": encode_wan_prompts(list(negative_prompts), self.tokenizer, self._encode_text, length)}

    def latent_shape(self, batch: int, num_frames: int, height: int, width: int) -> tuple[int, ...]:
        """Channels-last initial-noise shape (B, 1 + (frames − 1)/4, height/8, width/8, 16)."""
        _, s = self.vae.compression
        return (batch, self.vae.latent_frames(num_frames), height // s, width // s,
                self.transformer.config.in_channels)

    def _decode_impl(self, params, latents, tile=None):
        return nnx.merge(self._vae_graph, params).decode_for_pipeline(latents, tile=tile)

    def decode(self, latents, *, tile: int | None = None) -> np.ndarray:
        """Normalised latents → uint8 frames (B, T, H, W, 3)."""
        video = np.asarray(self._decode(self.vae_params, jnp.asarray(latents), tile=tile))
        check_finite(video, "VAE decoding")
        return to_uint8(video)

    # -- the main call -----------------------------------------------------------------------------------------------

    def __call__(self, prompt: str | Sequence[str], *, negative_prompt: str | Sequence[str] | None = None,
                 height: int | None = None, width: int | None = None, num_frames: int | None = None,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None, seed: int = 0,
                 latents=None, decode: bool = True, vae_tile: int | None = None,
                 progress: bool = True) -> VideoOutput:
        """Generate a video as diffusers' ``WanPipeline.__call__``. ``negative_prompt`` None means ``""``;
        guidance applies when ``guidance_scale > 1``. ``latents`` (B, T', H', W', 16), if given, is the initial
        noise (else drawn from ``seed``); ``decode=False`` returns latents only (diffusers' ``output_type="latent"``).
        Arguments left None take diffusers' defaults (:data:`WAN_DEFAULTS`)."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        req = self.check_inputs(height=height, width=width, num_frames=num_frames,
                                num_inference_steps=num_inference_steps, guidance_scale=guidance_scale)
        guided = req.guidance_scale > 1.0
        negatives = None
        if guided:
            negative_prompt = negative_prompt or ""
            negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
            if len(negatives) != len(prompts):
                raise InputError(f"{len(negatives)} negative prompts for {len(prompts)} prompts")
        timings = {}

        start = time.perf_counter()
        with progress_bar(progress, 1, "text encoding") as bar:
            cond, uncond = self.encode_prompt(prompts, negatives)
            jax.block_until_ready(cond)
            bar.update()
        timings["text_encoding"] = time.perf_counter() - start

        shape = self.latent_shape(len(prompts), req.num_frames, req.height, req.width)
        if self.mesh is not None:
            from sana_jax.parallel.dit import check_divisible

            check_divisible(shape[0] * (2 if guided else 1), shape[1], self.mesh)
        if latents is None:
            latents = jax.random.normal(jax.random.key(seed), shape, jnp.float32)
        elif tuple(np.shape(latents)) != shape:
            raise InputError(f"latents must have shape {shape} for this size, got {tuple(np.shape(latents))}")
        latents = jnp.asarray(latents, jnp.float32)

        schedule = wan_schedule(self.scheduler_config, req.num_inference_steps)
        frames, latents_host = denoise_and_decode(self, latents, schedule, cond, uncond,
                                                  req.guidance_scale if guided else 1.0, timings=timings,
                                                  progress=progress, decode=decode, vae_tile=vae_tile)
        return VideoOutput(frames, latents_host, timings, fps=self.fps)

"""``TwoStagePipeline``: SANA-Video 720p (stage 1) → [×2 latent upsampler] → LTX-2 refiner (stage 2) → tiled LTX-2
decode → uint8 frames (SANA-Video's "Bet Small to Win Big" 2K recipe; docs/refiner.md, docs/architecture.md).

Glue only. SANA-Video 720p already works in the normalised LTX-2 latent space, so its latents go to the refiner
as they are (no decode/encode round trip). Following SANA's script, stage 1 gets the prompt with the optional
``" motion score: N."`` suffix, stage 2 the raw prompt; stage 2's noise comes from the same seed, folded
(``fold_in(key(seed), 1)``) so it differs from stage 1's initial noise.

    from sana_jax.pipelines import SanaVideoPipeline, RefinePipeline, TwoStagePipeline
    pipe = TwoStagePipeline(SanaVideoPipeline.from_pretrained("SANA-Video_2B_720p_diffusers", dtype="bfloat16"),
                            RefinePipeline.from_pretrained("LTX-2", lora="ltx-2-19b-distilled-lora-384.safetensors",
                                                           dtype="bfloat16"))
    out = pipe("a cat surfing", upsample=True, side_by_side=True, motion_score=30)
    out.save("cat_2k.mp4"); out.save_side_by_side("cat_compare.mp4")
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sana_jax.errors import ConfigError, InputError
from sana_jax.io.video import SavesVideo, write_video
from sana_jax.pipelines.components import PipelineFolder, as_mesh
from sana_jax.pipelines.ltx2_codec import decode_latents
from sana_jax.pipelines.refine import RefinePipeline, RefinerPlan
from sana_jax.pipelines.refine_loop import DEFAULT_FPS
from sana_jax.pipelines.text_to_video import GenerationRequest, SanaVideoPipeline, check_folder
from sana_jax.progress import progress_bar
from sana_jax.sampling import DISTILLED_SIGMAS
from sana_jax.vae.ltx2 import DIFFUSERS_CLASS as LTX2_VAE_CLASS, LTX2VAE

#: the arguments of ``RefinePipeline.from_pretrained`` that ``RefinePipeline.check`` takes too
_PLAN_ARGS = ("lora", "lora_strength", "text_encoder", "upsampler")
#: diffusers' LTX-2 VAE tiling (512-pixel tiles, stride 448) in latent pixels: 16, overlapping by 2.
DEFAULT_VAE_TILE = 16


class TwoStagePlan(NamedTuple):
    """What :meth:`TwoStagePipeline.check` found without reading weights."""

    folder: PipelineFolder  # stage 1's SANA-Video folder (a Hub id resolved)
    request: GenerationRequest  # stage 1's request, defaults filled in
    refiner: RefinerPlan


def _check_stages(folder: PipelineFolder, refiner: RefinerPlan) -> None:
    """Stage 1 must make the latents the refiner takes: the LTX-2 VAE's, with the refiner's channel count."""
    vae = folder.class_name("vae")
    if vae != LTX2_VAE_CLASS:
        raise ConfigError(f"{folder.root}: the refiner needs the SANA-Video model with the LTX-2 VAE (720p); this one "
                          f"uses {vae or 'another VAE'}, whose latents LTX-2 cannot refine")
    transformer = folder.config("transformer")
    channels = transformer.get("out_channels") or transformer.get("in_channels")
    if channels != refiner.channels:
        raise ConfigError(f"{refiner.path}: its transformer takes {refiner.channels}-channel latents, "
                          f"{folder.root} makes {channels}")


@dataclasses.dataclass
class TwoStageOutput(SavesVideo):
    """``frames`` uint8 (B, T, H, W, 3) of stage 2 (None when not decoded); ``latents`` stage 2's normalised
    latents; ``stage1_latents`` SANA-Video's; ``stage1_frames`` stage 1 decoded and resized to stage 2's size (only
    with ``side_by_side=True``); ``timings`` seconds per stage."""

    frames: np.ndarray | None
    latents: np.ndarray
    stage1_latents: np.ndarray
    stage1_frames: np.ndarray | None
    timings: dict[str, float]
    fps: int = DEFAULT_FPS


    @property
    def side_by_side(self) -> np.ndarray:
        """uint8 (B, T, H, 2W, 3): stage 1 on the left, stage 2 on the right."""
        if self.stage1_frames is None or self.frames is None:
            raise InputError("no side-by-side video: call the pipeline with side_by_side=True (and decode=True)")
        return side_by_side(self.stage1_frames, self.frames)

    def save_side_by_side(self, path: str | Path, index: int = 0, *, overwrite: bool = False) -> Path:
        return write_video(self.side_by_side[index], path, fps=self.fps, overwrite=overwrite)


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (..., H, W, 3) → (..., height, width, 3), antialiased cubic (``jax.image.resize``)."""
    frames = np.asarray(frames)
    if frames.shape[-3:-1] == (height, width):
        return frames
    x = jnp.asarray(frames, jnp.float32)
    y = jax.image.resize(x, (*x.shape[:-3], height, width, x.shape[-1]), method="cubic", antialias=True)
    return np.asarray(jnp.clip(jnp.round(y), 0, 255)).astype(np.uint8)


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Two uint8 videos (..., T, H, W, 3) → one (..., T, H, W_left + W_right, 3); ``left`` is resized to
    ``right``'s height and width when they differ."""
    left, right = np.asarray(left), np.asarray(right)
    if left.shape[:-3] != right.shape[:-3]:
        raise InputError(f"side-by-side needs the same batch and frame count, got {left.shape} and {right.shape}")
    left = resize_frames(left, *right.shape[-3:-1])
    return np.concatenate([left, right], axis=-2)


class TwoStagePipeline:
    """SANA-Video 720p + the LTX-2 refiner. ``stage1`` must use the LTX-2 VAE (its latents are the refiner's
    input) with the refiner's latent channel count."""

    def __init__(self, stage1: SanaVideoPipeline, refiner: RefinePipeline):
        if not isinstance(stage1.vae, LTX2VAE):
            raise ConfigError("stage 1 must be a SANA-Video model with the LTX-2 VAE (the 720p model); the 480p "
                              "model's Wan latents cannot be refined by LTX-2")
        c1, c2 = stage1.transformer.config.out_channels, refiner.transformer.config.in_channels
        if c1 != c2:
            raise ConfigError(f"stage 1 makes {c1}-channel latents, the refiner takes {c2}")
        self.stage1, self.refiner = stage1, refiner
        self._stage1_vae = nnx.split(stage1.vae)

    @classmethod
    def check(cls, sana_folder: str | Path, ltx2: str | Path, *, height: int | None = None,
              width: int | None = None, num_frames: int | None = None, num_inference_steps: int | None = None,
              guidance_scale: float | None = None, image=None, local_files_only: bool = False,
              **refiner_kwargs) -> TwoStagePlan:
        """Every check that needs no weights: stage 1's request (``SanaVideoPipeline.check``), the refiner's paths
        (``RefinePipeline.check`` with ``refiner_kwargs``: ``lora=``, ``text_encoder=``, ``upsampler=`` …), and that
        stage 1 makes the latents the refiner takes (the LTX-2 VAE's, same channel count)."""
        folder = PipelineFolder.open(sana_folder, local_files_only=local_files_only)
        request = SanaVideoPipeline.check(folder, height=height, width=width, num_frames=num_frames,
                                          num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                                          image=image, memory=False)  # two stages and the refiner: not estimated
        refiner = RefinePipeline.check(ltx2, local_files_only=local_files_only, **refiner_kwargs)
        _check_stages(folder, refiner)
        return TwoStagePlan(folder, request, refiner)

    @classmethod
    def from_pretrained(cls, sana_folder: str | Path, ltx2: str | Path, *, dtype: str = "float32",
                        vae_dtype: str = "float32", prompt_style: str = "diffusers", progress: bool = False,
                        mesh=None, stage1_mesh=True, local_files_only: bool = False, weights: str | None = None,
                        **refiner_kwargs) -> "TwoStagePipeline":
        """``SanaVideoPipeline.from_pretrained(sana_folder)`` + ``RefinePipeline.from_pretrained(ltx2,
        **refiner_kwargs)`` (``lora=``, ``lora_strength=``, ``text_encoder=``, ``upsampler=``, …).

        ``mesh`` (a ``jax.sharding.Mesh`` or a spec string such as ``"tensor=2,context=4"``) runs the refiner sharded
        (weights by the logical-axis rules, tokens over ``context``, Ulysses self-attention) and, with
        ``stage1_mesh=True``, SANA-Video too (CFG halves over ``data``, latent frames over ``context``: its latent
        frame count must divide by the context size). ``stage1_mesh=False`` keeps stage 1 on one device (e.g. 81
        frames = 11 latent frames at ``context=4``); another mesh or spec gives stage 1 its own. ``weights``
        (``"fp8"`` / ``"int8"``): both stages' transformers and text encoders with 8-bit Linear weights."""
        folder = PipelineFolder.open(sana_folder, local_files_only=local_files_only)
        check_folder(folder)
        refiner_plan = RefinePipeline.check(ltx2, local_files_only=local_files_only,
                                            **{k: v for k, v in refiner_kwargs.items() if k in _PLAN_ARGS})
        _check_stages(folder, refiner_plan)  # sizes are checked per call
        mesh = as_mesh(mesh)
        mesh1 = mesh if stage1_mesh is True else (stage1_mesh or None)
        stage1 = SanaVideoPipeline.from_pretrained(folder.root, dtype=dtype, vae_dtype=vae_dtype,
                                                   prompt_style=prompt_style, progress=progress, mesh=mesh1,
                                                   weights=weights)
        refiner = RefinePipeline.from_pretrained(refiner_plan.path, dtype=dtype, vae_dtype=vae_dtype,
                                                 progress=progress, mesh=mesh, weights=weights, **refiner_kwargs)
        return cls(stage1, refiner)

    @property
    def fps(self) -> int:
        return self.stage1.fps

    def __call__(self, prompt: str | Sequence[str], *, negative_prompt: str | Sequence[str] = "",
                 refine_prompt: str | Sequence[str] | None = None, height: int | None = None,
                 width: int | None = None, num_frames: int = 81, num_inference_steps: int = 50,
                 guidance_scale: float = 6.0, seed: int = 0, motion_score: int | None = None,
                 latents=None, image=None, upsample: bool = False, sigmas: Sequence[float] = DISTILLED_SIGMAS,
                 side_by_side: bool = False, decode: bool = True, vae_tile: int | None = DEFAULT_VAE_TILE,
                 stage1_vae_tile: int | None = DEFAULT_VAE_TILE, frames_per_chunk: int | None = None,
                 decode_timestep: float = 0.0, decode_noise_scale: float | None = None,
                 progress: bool = True) -> TwoStageOutput:
        """Generate with SANA-Video, refine with LTX-2, decode.

        Args:
          prompt / negative_prompt / height / width / num_frames / num_inference_steps / guidance_scale /
            motion_score / latents / image: stage 1 (``SanaVideoPipeline.__call__``; default 704×1280, 81 frames).
          refine_prompt: stage 2's prompt (default: ``prompt``, without the motion-score suffix).
          seed: stage 1's noise is ``key(seed)``, stage 2's ``fold_in(key(seed), 1)``.
          upsample: ×2 latent upsampling before stage 2 (1408×2560 from 704×1280).
          side_by_side: also decode stage 1 (resized to stage 2's size when upsampled) for a comparison video.
          vae_tile: stage 2 decode tile in latent pixels (default 16 = diffusers' 512-pixel tiles; None: untiled);
            ``stage1_vae_tile`` likewise for the side-by-side decode of stage 1 (tiles covering the whole latent
            are the untiled decode).
          decode_timestep / decode_noise_scale: the LTX-2 VAE decode conditioning (diffusers' defaults 0 / none).
        """
        self.refiner.check_inputs(upsample=upsample)  # before stage 1 runs
        out1 = self.stage1(prompt, negative_prompt=negative_prompt, height=height, width=width,
                           num_frames=num_frames, num_inference_steps=num_inference_steps,
                           guidance_scale=guidance_scale, seed=seed, latents=latents, image=image,
                           motion_score=motion_score, decode=False, progress=progress)
        timings = {f"stage1_{k}": v for k, v in out1.timings.items()}
        refine_prompt = prompt if refine_prompt is None else refine_prompt
        key = jax.random.fold_in(jax.random.key(seed), 1)
        out2 = self.refiner(refine_prompt, out1.latents, key=key, upsample=upsample, fps=self.fps, sigmas=sigmas,
                            decode=decode, vae_tile=vae_tile, frames_per_chunk=frames_per_chunk,
                            decode_timestep=decode_timestep, decode_noise_scale=decode_noise_scale,
                            progress=progress)
        timings.update(out2.timings)
        stage1_frames = None
        if side_by_side and decode:
            start = time.perf_counter()
            with progress_bar(progress, 1, "decoding stage 1") as bar:
                # as SanaVideoPipeline.decode (timestep 0, no noise), through the decode the refiner compiled
                stage1_frames = decode_latents(self._stage1_vae, out1.latents, tile=stage1_vae_tile)
                if out2.frames is not None:
                    stage1_frames = resize_frames(stage1_frames, *out2.frames.shape[-3:-1])
                bar.update()
            timings["stage1_decoding"] = time.perf_counter() - start
        return TwoStageOutput(out2.frames, out2.latents, out1.latents, stage1_frames, timings, fps=self.fps)


__all__ = ["DEFAULT_VAE_TILE", "TwoStageOutput", "TwoStagePipeline", "TwoStagePlan", "resize_frames", "side_by_side"]

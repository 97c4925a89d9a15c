"""``sana-jax generate PROMPT --model FOLDER``: text-to-video (or image-to-video with ``--image``) to an mp4, with a
SANA-Video folder (``SanaVideoPipeline``) or a Wan2.1 one (``WanPipeline``, chosen by ``model_index.json``'s
``_class_name``)."""

from __future__ import annotations

import argparse
import time

from sana_jax.commands import DTYPES
from sana_jax.commands.hosts import add_args as add_mesh_args, mesh_from_args, one_writer
from sana_jax.commands.options import POSITIVE, SEED, integer, number
from sana_jax.commands.refine import add_output_args, add_refiner_args, add_weights_arg, print_timings


def add_parser(sub) -> None:
    gen = sub.add_parser(
        "generate", help="generate a video from a prompt (text-to-video, or image-to-video with --image)",
        description="Generate a video with a diffusers pipeline folder: SANA-Video (Gemma-2 prompt encoding) or "
                    "Wan2.1 text-to-video (a WanPipeline folder: UMT5 prompt encoding); then denoising with the "
                    "folder's scheduler and classifier-free guidance, VAE decoding, mp4. Sizes and frame counts are "
                    "checked before any weights are loaded. Defaults follow the checkpoint: SANA-Video 480×832 for "
                    "the 480p model, 704×1280 for the 720p one, 81 frames, 50 steps, guidance 6; Wan2.1 480×832, 81 "
                    "frames, 50 steps, guidance 5, 16 fps (diffusers' WanPipeline). Without --model the small model "
                    "embedded in the package is used (64×64, 9 frames, 20 steps, guidance 1.5; prompts like 'a red "
                    "circle moving left', optionally '... on a white background').")
    gen.add_argument("prompt", help="the text prompt")
    gen.add_argument("--model", default=None,
                     help="diffusers pipeline folder (model_index.json) of SANA-Video or Wan2.1 (WanPipeline), an "
                          "original Wan2.1 folder (Wan-AI/Wan2.1-T2V-1.3B layout), or a Hugging Face Hub id "
                          "(org/name, from the hub's cache); default: the small model embedded in the package "
                          "(64×64 coloured shapes, e.g. 'a blue square moving up'; docs/default-model.md)")
    gen.add_argument("--image", default=None,
                     help="first frame (PNG/JPEG): image-to-video, resized to the video (SANA-Video only)")
    gen.add_argument("--height", type=POSITIVE, default=None,
                     help="pixels (default: the checkpoint's resolution, 480 for Wan2.1)")
    gen.add_argument("--width", type=POSITIVE, default=None,
                     help="pixels (default: the checkpoint's resolution, 832 for Wan2.1)")
    gen.add_argument("--frames", type=POSITIVE, default=None,
                     help="frame count: 1 + 4k (Wan VAE), 1 + 8k (LTX-2 VAE) or 4k (DC-AE-V, e.g. 80); default: the "
                          "checkpoint's (81 for SANA-Video and Wan2.1, 9 for the embedded model)")
    gen.add_argument("--steps", type=POSITIVE, default=None, help="denoising steps (default: the checkpoint's, 50 for "
                                                              "SANA-Video and Wan2.1)")
    gen.add_argument("--guidance", type=number(0), default=None,
                     help="classifier-free guidance scale, 1 = off (Wan2.1: any value ≤ 1, as diffusers); default: the "
                          "checkpoint's, 6 for SANA-Video, 5 for Wan2.1")
    gen.add_argument("--seed", type=SEED, default=0, help="random seed (the same seed gives the same video)")
    gen.add_argument("--negative-prompt", default="", help="negative prompt for guidance (default empty, as diffusers)")
    gen.add_argument("--motion-score", type=integer(0), default=None,
                     help="append ' motion score: N.' to the prompt (SANA-Video's motion control; docs use 30; "
                          "SANA-Video only)")
    gen.add_argument("--prompt-style", choices=["diffusers", "sana"], default=None,
                     help="prompt template and casing: diffusers' pipeline (lower-cased; the default) or the original "
                          "Sana script (SANA-Video only)")
    gen.add_argument("--dtype", choices=DTYPES, default="float32",
                     help="transformer and text-encoder dtype (bfloat16 on GPU)")
    add_weights_arg(gen, "the transformers' and text encoders' (with --refine, both stages')")
    gen.add_argument("--vae-tile", type=POSITIVE, default=None,
                     help="decode in spatial tiles of this many latent pixels (bounded memory at high resolution; "
                          "with --refine the default is 16 = 512 px)")
    add_output_args(gen, "output.mp4")
    gen.add_argument("--save-latents", default=None, metavar="PATH",
                     help="also save the (stage-1) latents (.npy or .safetensors; normalised, channels-last): "
                          "SANA-Video 720p's are what `sana-jax refine` takes")
    add_mesh_args(gen, "run the DiT sharded on a device mesh, e.g. data=2,context=4 (CFG halves over data, latent "
                       "frames over context, heads/MLP over tensor); the axis sizes must multiply to the devices (of "
                       "every process). With --refine the LTX-2 refiner runs on it too (weights loaded shard by "
                       "shard, video tokens over context with Ulysses self-attention); stage 1 stays on one device "
                       "when its latent frames do not divide by context")
    gen.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    two = gen.add_argument_group(
        "two-stage 2K (LTX-2 refiner)",
        "With --refine, the SANA-Video 720p latents go to LTX-2's distilled stage 2 (optional ×2 upsampling, "
        "3 Euler steps, no guidance) and the LTX-2 VAE decodes the result; --out is the refined video.")
    two.add_argument("--refine", default=None, metavar="LTX2",
                     help="diffusers LTX-2 folder (model_index.json), its Hub id, or native LTX-2 .safetensors file")
    two.add_argument("--refine-prompt", default=None,
                     help="stage 2's prompt (default: the prompt, without the motion-score suffix)")
    add_refiner_args(two)
    gen.set_defaults(run=run)


def load_image(path: str, height: int, width: int):
    """An image file → uint8 (height, width, 3), resized (Lanczos) if its size differs."""
    import numpy as np
    from PIL import Image

    from sana_jax.errors import InputError

    try:
        img = Image.open(path).convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:  # the bomb: PIL's pixel limit, ~179 MP
        raise InputError(f"--image {path}: cannot read it as an image ({e})") from e
    if img.size != (width, height):
        img = img.resize((width, height), Image.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


def run(args: argparse.Namespace) -> int:
    from sana_jax.commands.refine import check_outputs, side_by_side_path
    from sana_jax.errors import InputError
    from sana_jax.pipelines import SanaVideoPipeline, TwoStagePipeline
    from sana_jax.pipelines.components import PipelineFolder
    from converters.hub import resolve
    from sana_jax.pipelines.wan_components import is_wan_folder

    check_outputs(args, side_by_side_path(args, args.out))  # before anything is loaded or computed
    if args.model is None:
        from sana_jax.demo import default_model_path

        args.model = str(default_model_path())
        print(f"using the embedded default model ({args.model}: 64×64 coloured shapes; pass --model for a "
              "SANA-Video checkpoint)")
    refine_only = {"--lora": args.lora, "--upsample": args.upsample, "--upsampler": args.upsampler,
                   "--side-by-side": args.side_by_side is not None, "--text-encoder": args.text_encoder,
                   "--video-only": args.video_only, "--refine-prompt": args.refine_prompt}
    used = [k for k, v in refine_only.items() if v]
    root = resolve(args.model)  # a Hub id: its snapshot in the cache
    if is_wan_folder(root):  # diffusers WanPipeline or original Wan2.1 layout
        return _run_wan(args, root, used)
    folder = PipelineFolder.open(root)
    args.prompt_style = args.prompt_style or "diffusers"
    if args.refine is None and used:
        raise InputError(f"{', '.join(used)} only apply to the two-stage pipeline: add --refine LTX2_FOLDER")
    # every check that needs no weights happens before loading them
    request = {"height": args.height, "width": args.width, "num_frames": args.frames,
               "num_inference_steps": args.steps, "guidance_scale": args.guidance, "image": args.image}
    if args.refine is not None:
        from sana_jax.commands.refine import refiner_options

        return _run_two_stage(args, TwoStagePipeline.check(args.model, args.refine, **request,
                                                           **refiner_options(args)))
    req = SanaVideoPipeline.check(folder, **request, memory=False)  # memory: below, once the devices are known

    start = time.perf_counter()
    mesh = mesh_from_args(args)
    from sana_jax.pipelines.memory import check_folder_generation

    check_folder_generation(folder, num_frames=req.num_frames, height=req.height, width=req.width,
                            guidance_scale=req.guidance_scale, dtype=args.dtype, vae_tile=args.vae_tile, mesh=mesh,
                            weights=args.weights)
    pipe = SanaVideoPipeline.from_pretrained(folder.root, dtype=args.dtype, prompt_style=args.prompt_style,
                                             progress=not args.quiet, mesh=mesh, weights=args.weights)
    load_s = time.perf_counter() - start
    image = None if args.image is None else load_image(args.image, req.height, req.width)
    result = pipe(args.prompt, negative_prompt=args.negative_prompt, height=req.height, width=req.width,
                  num_frames=req.num_frames, num_inference_steps=req.num_inference_steps,
                  guidance_scale=req.guidance_scale, seed=args.seed, image=image, motion_score=args.motion_score,
                  vae_tile=args.vae_tile, progress=not args.quiet)
    return _write(args, result, req, pipe.fps, load_s)


def _write(args: argparse.Namespace, result, req, fps: int, load_s: float) -> int:
    """Save the video (and ``--save-latents``), print where they went and the time per stage."""
    start = time.perf_counter()
    with one_writer() as writer:
        if writer:
            path = result.save(args.out, overwrite=args.overwrite)
            print(f"wrote {path} ({req.num_frames} frames, {req.width}×{req.height}, {fps} fps)")
            if args.save_latents:
                from sana_jax.io.latents import save_latents

                saved = save_latents(result.latents, args.save_latents, overwrite=args.overwrite)
                print(f"wrote {saved} (latents {result.latents.shape})")
    print_timings({"loading": load_s, **result.timings, "writing": time.perf_counter() - start})
    return 0



def _run_wan(args: argparse.Namespace, folder, refine_options: list[str]) -> int:
    """Wan2.1 text-to-video (``WanPipeline``): the options of SANA-Video alone (and the refiner's,
    ``refine_options``) are refused, not ignored."""
    from sana_jax.errors import InputError
    from sana_jax.pipelines.wan import WanPipeline

    sana_only = {"--image": args.image, "--motion-score": args.motion_score, "--prompt-style": args.prompt_style,
                 "--refine": args.refine}
    used = [k for k, v in sana_only.items() if v is not None] + refine_options
    if used:
        raise InputError(f"{', '.join(used)} {'does' if len(used) == 1 else 'do'} not apply to Wan2.1 "
                         f"(WanPipeline) folders: SANA-Video only")
    req = WanPipeline.check(folder, height=args.height, width=args.width, num_frames=args.frames,
                            num_inference_steps=args.steps, guidance_scale=args.guidance)
    start = time.perf_counter()
    mesh = mesh_from_args(args)  # no memory estimate for Wan (WanPipeline.check says why)
    pipe = WanPipeline.from_pretrained(folder, dtype=args.dtype, progress=not args.quiet, mesh=mesh,
                                       weights=args.weights)
    load_s = time.perf_counter() - start
    result = pipe(args.prompt, negative_prompt=args.negative_prompt, height=req.height, width=req.width,
                  num_frames=req.num_frames, num_inference_steps=req.num_inference_steps,
                  guidance_scale=req.guidance_scale, seed=args.seed, vae_tile=args.vae_tile, progress=not args.quiet)
    return _write(args, result, req, pipe.fps, load_s)


def _run_two_stage(args: argparse.Namespace, plan) -> int:
    """SANA-Video 720p → [upsampler] → LTX-2 refiner → LTX-2 VAE: ``--out`` is the refined video (``plan``: what
    ``TwoStagePipeline.check`` found)."""
    from sana_jax.commands.refine import load_refiner, side_by_side_path
    from sana_jax.pipelines import SanaVideoPipeline, TwoStagePipeline
    from sana_jax.pipelines.two_stage import DEFAULT_VAE_TILE

    start = time.perf_counter()
    mesh = stage1_mesh = mesh_from_args(args)
    if mesh is not None:
        import sys

        from sana_jax.errors import InputError
        from sana_jax.parallel.dit import check_divisible

        try:  # stage 1 splits whole latent frames over context and the CFG batch over data
            check_divisible(1 if plan.request.guidance_scale == 1.0 else 2, plan.request.latent_frames, mesh)
        except InputError as e:
            stage1_mesh = None
            print(f"note: stage 1 runs on one device ({e}); the refiner runs on the mesh", file=sys.stderr)
    stage1 = SanaVideoPipeline.from_pretrained(plan.folder.root, dtype=args.dtype, prompt_style=args.prompt_style,
                                               progress=not args.quiet, mesh=stage1_mesh, weights=args.weights)
    refiner = load_refiner(args, plan.refiner, args.dtype, mesh=mesh)
    pipe = TwoStagePipeline(stage1, refiner)
    load_s = time.perf_counter() - start
    req = plan.request
    image = None if args.image is None else load_image(args.image, req.height, req.width)
    sbs = side_by_side_path(args, args.out)
    result = pipe(args.prompt, negative_prompt=args.negative_prompt, refine_prompt=args.refine_prompt,
                  height=req.height, width=req.width, num_frames=req.num_frames,
                  num_inference_steps=req.num_inference_steps, guidance_scale=req.guidance_scale, seed=args.seed,
                  image=image, motion_score=args.motion_score,
                  upsample=args.upsample, side_by_side=sbs is not None,
                  vae_tile=args.vae_tile or DEFAULT_VAE_TILE, stage1_vae_tile=args.vae_tile or DEFAULT_VAE_TILE,
                  progress=not args.quiet)
    start = time.perf_counter()
    with one_writer() as writer:
        if writer:
            path = result.save(args.out, overwrite=args.overwrite)
            t, h, w = result.frames.shape[1:4]
            print(f"wrote {path} ({t} frames, {w}×{h}, {pipe.fps} fps, refined)")
            if sbs is not None:
                print(f"wrote {result.save_side_by_side(sbs, overwrite=args.overwrite)} (stage 1 | stage 2)")
            if args.save_latents:
                from sana_jax.io.latents import save_latents

                saved = save_latents(result.stage1_latents, args.save_latents, overwrite=args.overwrite)
                print(f"wrote {saved} (stage-1 latents {result.stage1_latents.shape})")
    print_timings({"loading": load_s, **result.timings, "writing": time.perf_counter() - start})
    return 0



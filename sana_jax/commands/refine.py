"""``sana-jax refine INPUT --model LTX2 --prompt P --out OUT``: the LTX-2 stage-2 refiner on a saved stage-1 latent
(``.npy`` / ``.safetensors``, normalised LTX-2 latents channels-last, e.g. from ``generate --save-latents``) or on
a video (encoded with the LTX-2 VAE first). Also provides the refiner options ``generate --refine`` shares."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sana_jax.commands import DTYPES
from sana_jax.commands.hosts import add_args as add_mesh_args, mesh_from_args, one_writer
from sana_jax.commands.options import POSITIVE, SEED, integer, number


def add_refiner_args(parser) -> None:
    """Options that pick and load the refiner (shared with ``generate --refine``)."""
    parser.add_argument("--lora", default=None,
                        help="LoRA .safetensors fused into the LTX-2 transformer while loading (SANA's recipe: "
                             "ltx-2-19b-distilled-lora-384.safetensors)")
    parser.add_argument("--lora-strength", type=number(), default=1.0, help="LoRA strength (default 1.0)")
    parser.add_argument("--text-encoder", default=None,
                        help="Gemma-3 folder or Hub id (with its tokenizer); required with a native LTX-2 .safetensors "
                             "file")
    parser.add_argument("--upsample", action="store_true",
                        help="×2 spatial latent upsampling before refining (e.g. 704×1280 → 1408×2560)")
    parser.add_argument("--upsampler", default=None,
                        help="latent upsampler folder or file (default: the LTX-2 folder's latent_upsampler/)")
    parser.add_argument("--video-only", action="store_true",
                        help="load and run the transformer without its audio stream (13 B instead of 19 B "
                             "parameters; an approximation of the stock refiner)")
    parser.add_argument("--side-by-side", nargs="?", const="", default=None, metavar="PATH",
                        help="also write the input and the refined video side by side (default path: "
                             "OUT with '.side_by_side' before '.mp4')")


def add_weights_arg(parser, what: str = "the transformer's and the text encoder's") -> None:
    """``--weights fp8|int8`` (``converters.load(weights=)``), shared by generate, refine, stream and convert."""
    parser.add_argument("--weights", choices=("fp8", "int8"), default=None,
                        help=f"keep {what} dense weights (every Linear's, SANA-Video's temporal conv) in 8 bits "
                             "with a float32 scale per output channel, dequantised inside the jitted computation "
                             "(about half the memory of bfloat16): "
                             "fp8 (float8_e4m3fn; an fp8 checkpoint such as ltx-2-19b-dev-fp8 keeps its own values) "
                             "or int8 (quantised while loading, or as saved by `sana-jax convert --weights int8`). "
                             "Default: weights in --dtype (fp8 checkpoints dequantised while loading)")


def side_by_side_path(args, out: str) -> Path | None:
    if args.side_by_side is None:
        return None
    if args.side_by_side:
        return Path(args.side_by_side)
    out = Path(out)
    return out.with_name(f"{out.stem}.side_by_side{out.suffix or '.mp4'}")


def add_output_args(parser, default: str) -> None:
    """``--out`` and ``--overwrite`` of ``generate`` and ``refine`` (what :func:`check_outputs` checks)."""
    parser.add_argument("--out", default=default,
                        help=f"output mp4 path (default {default}); an existing file is refused unless --overwrite. "
                             "Written under a temporary name, its frames counted back, then renamed: a failed write "
                             "leaves nothing")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out (and --save-latents, --side-by-side files)")


def check_outputs(args: argparse.Namespace, side_by_side: Path | None = None) -> None:
    """Every file ``generate`` / ``refine`` will write (``--out``, ``--save-latents``, ``--side-by-side``), checked
    before any work: its format, not a folder, not existing unless ``--overwrite``, a parent that can be written
    in."""
    from sana_jax.errors import InputError
    from sana_jax.io.files import check_output_file
    from sana_jax.io.latents import LATENT_SUFFIXES, check_latents_path

    check_output_file(args.out, "--out", overwrite=args.overwrite)
    if args.save_latents:
        check_latents_path(args.save_latents)
        check_output_file(args.save_latents, "--save-latents", suffixes=LATENT_SUFFIXES, overwrite=args.overwrite)
    if side_by_side is not None:
        check_output_file(side_by_side, "--side-by-side", overwrite=args.overwrite)
        if side_by_side.absolute() == Path(args.out).absolute():
            raise InputError(f"--side-by-side {side_by_side}: the same file as --out; give another path")


def refiner_options(args) -> dict:
    """The refiner options as ``RefinePipeline.check`` / ``from_pretrained`` take them (``--upsample`` without
    ``--upsampler``: the folder's ``latent_upsampler/``, which must exist)."""
    return {"lora": args.lora, "lora_strength": args.lora_strength, "text_encoder": args.text_encoder,
            "upsampler": args.upsampler if args.upsampler is not None else args.upsample}


def load_refiner(args, plan, dtype: str, mesh=None):
    """``RefinePipeline.from_pretrained`` on a checked ``RefinerPlan`` with the command's options."""
    from sana_jax.pipelines import RefinePipeline

    return RefinePipeline.from_pretrained(plan.path, **refiner_options(args), dtype=dtype, video_only=args.video_only,
                                          progress=not args.quiet, mesh=mesh, weights=args.weights)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "refine", help="refine a stage-1 latent or a video with the LTX-2 refiner (stage 2 of the 2K pipeline)",
        description="Run LTX-2's distilled stage 2 on normalised LTX-2 latents (.npy/.safetensors, channels-last "
                    "(B, T, H, W, C) or (T, H, W, C), e.g. from `sana-jax generate --save-latents`) or on a video "
                    "(encoded with the LTX-2 VAE): optional ×2 latent upsampling, re-noise to σ 0.909375, 3 Euler "
                    "steps (0.909375 → 0.725 → 0.421875 → 0) without guidance, the audio stream fed the zero audio "
                    "latent, tiled VAE decode, mp4.")
    p.add_argument("input", help="stage-1 latents (.npy / .safetensors) or a video file (frames 1 + 8k, sides "
                                 "multiples of 32)")
    p.add_argument("--model", required=True,
                   help="diffusers LTX-2 folder (model_index.json), its Hub id (org/name), or native LTX-2 file")
    p.add_argument("--prompt", required=True, help="the text prompt (stage 2 gets it raw, without motion score)")
    add_output_args(p, "refined.mp4")
    add_refiner_args(p)
    p.add_argument("--seed", type=SEED, default=0, help="random seed for the re-noising")
    p.add_argument("--fps", type=POSITIVE, default=16, help="frame rate: RoPE conditioning, audio length, output")
    p.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="transformer, connectors and Gemma-3 dtype (bfloat16 on GPU)")
    add_weights_arg(p, "the LTX-2 transformer's and Gemma-3's")
    p.add_argument("--vae-tile", type=integer(0), default=16,
                   help="decode in spatial tiles of this many latent pixels (0: untiled; default 16 = 512 px)")
    p.add_argument("--save-latents", default=None, metavar="PATH",
                   help="also save the refined latents (.npy or .safetensors)")
    add_mesh_args(p, "run the LTX-2 transformer sharded on a device mesh, e.g. context=8 or tensor=2,context=4: "
                     "each device loads only its shard of the weights (heads/MLP over tensor), video tokens over "
                     "context with Ulysses all-to-all self-attention (the video heads, 32, must divide by "
                     "context×tensor, else the attention K/V are gathered), batch over data; the text encoder and VAE "
                     "run on one device (of each process); the axis sizes must multiply to the device count")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def _read_input(args, plan):
    """(latents or None, frames or None), checked against the refiner's ``plan`` before any weights are loaded."""
    import numpy as np

    from sana_jax.errors import InputError
    from sana_jax.io.latents import LATENT_SUFFIXES, load_latents

    path = Path(args.input)
    if not path.is_file():
        raise InputError(f"{args.input}: no such file")
    if path.suffix in LATENT_SUFFIXES:
        latents = load_latents(path)
        plan.check_latents(latents.shape, args.input)
        return latents, None
    from sana_jax.io.video import read_video

    try:
        frames = read_video(path)
    except Exception as e:  # PyAV raises several types for unreadable files
        raise InputError(f"{args.input}: cannot read as latents (.npy/.safetensors) or as a video ({e})") from e
    plan.check_frames(frames.shape, args.input)
    return None, np.ascontiguousarray(frames)


def run(args: argparse.Namespace) -> int:
    from sana_jax.errors import InputError
    from sana_jax.pipelines import RefinePipeline

    check_outputs(args, side_by_side_path(args, args.out))  # before anything is loaded or computed
    plan = RefinePipeline.check(args.model, **refiner_options(args))
    if args.vae_tile is not None and args.vae_tile < 0:
        raise InputError(f"--vae-tile {args.vae_tile} must be ≥ 0")
    latents, frames = _read_input(args, plan)
    mesh = mesh_from_args(args)  # a bad spec or device count fails before any weights are read
    start = time.perf_counter()
    refiner = load_refiner(args, plan, args.dtype, mesh=mesh)
    timings = {"loading": time.perf_counter() - start}
    if latents is None:
        start = time.perf_counter()
        latents = refiner.encode_video(frames)
        timings["encoding"] = time.perf_counter() - start
    out = refiner(args.prompt, latents, seed=args.seed, upsample=args.upsample, fps=args.fps,
                  vae_tile=args.vae_tile or None, video_only=args.video_only, progress=not args.quiet)
    timings.update(out.timings)
    start = time.perf_counter()
    with one_writer() as writer:
        if writer:
            _write(args, out, frames, latents, refiner)
    timings["writing"] = time.perf_counter() - start
    print_timings(timings)
    return 0


def _write(args, out, frames, latents, refiner) -> None:
    """The refined video, ``--side-by-side`` (input | refined) and ``--save-latents``; one line each."""
    path = out.save(args.out, overwrite=args.overwrite)
    t, h, w = out.frames.shape[1:4]
    print(f"wrote {path} ({t} frames, {w}×{h}, {out.fps} fps)")
    sbs = side_by_side_path(args, args.out)
    if sbs is not None:
        from sana_jax.io.video import write_video
        from sana_jax.pipelines.two_stage import side_by_side

        before = frames[None] if frames is not None else refiner.decode(latents, tile=args.vae_tile or None)
        print(f"wrote {write_video(side_by_side(before, out.frames)[0], sbs, fps=out.fps, overwrite=args.overwrite)}"
              " (input | refined)")
    if args.save_latents:
        from sana_jax.io.latents import save_latents

        saved = save_latents(out.latents, args.save_latents, overwrite=args.overwrite)
        print(f"wrote {saved} (refined latents {out.latents.shape})")


def print_timings(timings: dict) -> None:
    """``time: loading 3.1 s, denoising 2.5 s, …`` (each process prints its own)."""
    print("time: " + ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in timings.items()))

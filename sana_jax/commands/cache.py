"""``sana-jax cache VIDEOS --model FOLDER --out CACHE``: encode a folder of captioned videos once (VAE latents and
caption embeddings) for ``sana-jax train``."""

from __future__ import annotations

import argparse
import time
from sana_jax.commands.hosts import add_args as add_mesh_args, mesh_from_args, say
from sana_jax.commands.options import POSITIVE


def add_parser(sub) -> None:
    cache = sub.add_parser(
        "cache", help="encode captioned videos into a latent/text cache for training",
        description="Read every video of a folder (captions in <name>.txt beside each video or in captions.json), "
                    "take its first --frames frames, centre-crop and resize them to --height×--width, and encode them "
                    "with the pipeline's VAE (normalised posterior mean) and text encoder (each caption once, as "
                    "the pipeline encodes prompts). The cache is written under a temporary name and renamed when "
                    "complete.")
    cache.add_argument("videos", help="folder of videos with captions")
    cache.add_argument("--model", required=True, help="diffusers SANA-Video pipeline folder (its VAE and text encoder)")
    cache.add_argument("--vae", default=None,
                       help="use this VAE instead of the pipeline's: a pipeline folder (its vae/) or a VAE folder, "
                            "e.g. LTX-2's for the 2K adaptation recipe")
    cache.add_argument("--out", required=True, help="cache folder to write (refused if it exists, unless --overwrite)")
    cache.add_argument("--frames", type=POSITIVE, required=True, help="frames per clip (the VAE's frame rule)")
    cache.add_argument("--height", type=POSITIVE, required=True, help="pixels")
    cache.add_argument("--width", type=POSITIVE, required=True, help="pixels")
    cache.add_argument("--batch-size", type=POSITIVE, default=4, help="videos encoded together")
    cache.add_argument("--overwrite", action="store_true", help="replace an existing cache")
    cache.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_mesh_args(cache, "spread the encoding over these devices, e.g. data=8: the batches of --batch-size clips go "
                         "round-robin to the mesh's devices (over every process; without it, one device per "
                         "process); each process reads only the videos it encodes, and process 0 writes the cache")
    cache.set_defaults(run=run)


def load_vae(path: str):
    """A VAE from a pipeline folder (its ``vae/``) or a VAE component folder."""
    from pathlib import Path

    import converters

    path = Path(path)
    return converters.load(path / "vae" if (path / "model_index.json").exists() else path)


def run(args: argparse.Namespace) -> int:
    from sana_jax.io.files import check_output_folder
    from sana_jax.pipelines import SanaVideoPipeline
    from sana_jax.pipelines.components import check_video_size
    from sana_jax.training import cache_video_folder

    check_output_folder(args.out, "--out", overwrite=args.overwrite)  # before anything is loaded or computed
    mesh = mesh_from_args(args)
    start = time.perf_counter()
    pipe = SanaVideoPipeline.from_pretrained(args.model, progress=not args.quiet)
    if args.vae is not None:
        pipe = SanaVideoPipeline(pipe.transformer, load_vae(args.vae), pipe.text_encoder, pipe.tokenizer,
                                 pipe.scheduler_config, prompt_style=pipe.prompt_style, defaults=pipe.defaults)
    check_video_size(args.height, args.width, args.frames, *pipe.vae.compression,
                     causal_first_frame=pipe.vae.causal_first_frame)
    dataset = cache_video_folder(pipe, args.videos, args.out, num_frames=args.frames, height=args.height,
                                 width=args.width, batch_size=args.batch_size, progress=not args.quiet,
                                 overwrite=args.overwrite, mesh=mesh)
    say(f"wrote {args.out}: {dataset.size} clips, latents {tuple(dataset.latents.shape[1:])}, "
        f"{len(dataset.captions)} distinct captions ({time.perf_counter() - start:.1f} s)")
    return 0

"""``sana-jax stream PROMPT --model FOLDER --seconds S``: LongSANA streaming long video, written live to an mp4."""

from __future__ import annotations

import argparse

from sana_jax.commands import DTYPES


def add_parser(sub) -> None:
    p = sub.add_parser(
        "stream", help="stream a long video chunk by chunk (LongSANA), written to the mp4 as it is generated",
        description="Generate a long video with a LongSANA (or any SANA-Video) diffusers pipeline folder, chunk by "
                    "chunk with a constant-size state: 4 re-noising steps per chunk at t = 1000, 960, 889, 727 "
                    "without guidance, a clean pass that commits the chunk, streaming VAE decode, and frames "
                    "appended to a fragmented mp4 that can be watched while it grows. Ctrl-C stops and keeps a "
                    "valid file with what was written. Prints the time to the first frame and the frame rate.")
    p.add_argument("prompt", help="the text prompt")
    p.add_argument("--model", default=None,
                   help="diffusers pipeline folder (model_index.json) or its Hugging Face Hub id (org/name, from the "
                        "hub's cache)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=float, default=None, help="video length in seconds (default 10)")
    length.add_argument("--chunks", type=int, default=None,
                        help="number of chunks instead of --seconds (chunk_frames·chunks + 1 latent frames)")
    p.add_argument("--chunk-frames", type=int, default=10, help="latent frames per chunk (LongSANA: 10)")
    p.add_argument("--height", type=int, default=None, help="pixels (default: the checkpoint's resolution)")
    p.add_argument("--width", type=int, default=None, help="pixels (default: the checkpoint's resolution)")
    p.add_argument("--seed", type=int, default=0, help="random seed (the same seed gives the same video)")
    p.add_argument("--window", type=int, default=None,
                   help="attend to the last N chunks only (default: all earlier chunks, a running sum)")
    p.add_argument("--switch", action="append", default=[], metavar="CHUNK:PROMPT",
                   help="switch to PROMPT from chunk CHUNK on (repeatable), e.g. --switch '6:a cat sleeping'")
    p.add_argument("--motion-score", type=int, default=None, help="append ' motion score: N.' to the prompt")
    p.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="transformer and text-encoder dtype (bfloat16 on GPU)")
    p.add_argument("--fps", type=float, default=16.0, help="frame rate of the mp4 (SANA-Video: 16)")
    p.add_argument("--out", default="stream.mp4", help="output mp4 path (written live under a temporary name)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def parse_switches(items: list[str]) -> dict[int, str]:
    from sana_jax.errors import InputError

    out = {}
    for item in items:
        chunk, sep, text = item.partition(":")
        if not sep or not chunk.strip().isdigit() or int(chunk) < 1 or not text.strip():
            raise InputError(f"--switch {item!r}: expected CHUNK:PROMPT with CHUNK a chunk index >= 1")
        out[int(chunk)] = text.strip()
    return out


def run(args: argparse.Namespace) -> int:
    from sana_jax.errors import InputError
    from sana_jax.pipelines.streaming import StreamingPipeline

    if args.model is None:
        raise InputError("--model FOLDER is required: a diffusers LongSANA / SANA-Video pipeline folder")
    seconds = 10.0 if args.seconds is None and args.chunks is None else args.seconds
    switches = parse_switches(args.switch)
    # every check that needs no weights happens before loading them
    request = StreamingPipeline.check(args.model, seconds=seconds, num_chunks=args.chunks,
                                      chunk_frames=args.chunk_frames, fps=args.fps, height=args.height,
                                      width=args.width, window=args.window, prompts_at=switches)
    height, width, sizes = request.height, request.width, request.chunks

    pipe = StreamingPipeline.from_pretrained(args.model, dtype=args.dtype, motion_score=args.motion_score,
                                             progress=not args.quiet, fps=args.fps)
    result = pipe.stream(args.prompt, seconds=seconds, num_chunks=args.chunks, chunk_frames=args.chunk_frames,
                         height=height, width=width, seed=args.seed, prompts_at=switches, window=args.window,
                         out=args.out, progress=not args.quiet)
    status = "interrupted: kept" if result.interrupted else "wrote"
    where = result.path if result.path is not None and result.frames else "nothing"
    print(f"{status} {where} ({result.frames} frames, {width}×{height}, {args.fps:g} fps, "
          f"{len(result.chunks)}/{len(sizes)} chunks)")
    ttff = "n/a" if result.time_to_first_frame_s is None else f"{result.time_to_first_frame_s:.2f} s"
    steady = "" if result.steady_fps is None else f", steady {result.steady_fps:.1f} FPS"
    print(f"time to first frame {ttff} (prompt and compilation included), {result.fps:.1f} FPS overall{steady}, "
          f"total {result.total_s:.1f} s, stream state {result.state_bytes / 2**20:.1f} MiB")
    return 130 if result.interrupted else 0

"""``sana-jax stream PROMPT [--model FOLDER] --seconds S``: LongSANA streaming long video, written live to an mp4
(from the embedded streaming default when no model is named)."""

from __future__ import annotations

import argparse
import contextlib

from sana_jax.commands import DTYPES
from sana_jax.commands.hosts import add_args as add_mesh_args, mesh_from_args, one_writer, say
from sana_jax.commands.options import POSITIVE, POSITIVE_NUMBER, SEED, integer
from sana_jax.commands.refine import add_weights_arg


def add_parser(sub) -> None:
    p = sub.add_parser(
        "stream", help="stream a long video chunk by chunk (LongSANA, CausVid, Self-Forcing), written to the mp4 as "
                       "it is generated",
        description="Generate a long video chunk by chunk: with a LongSANA (or any SANA-Video) folder, a constant-size "
                    "linear-attention state and 4 re-noising steps per chunk at t = 1000, 960, 889, 727; with a "
                    "Wan2.1 student (CausVid, Self-Forcing, or one made by `sana-jax train distill`), a KV cache and "
                    "chunks of 3 latent frames (--window/--sink keep its memory flat). No guidance; a clean pass "
                    "commits each chunk; streaming VAE decode; frames appended to a fragmented mp4 that can be "
                    "watched while it grows. Ctrl-C stops and keeps a valid file with what was written. Prints the "
                    "time to the first frame and the frame rate.")
    p.add_argument("prompt", help="the text prompt")
    p.add_argument("--model", default=None,
                   help="diffusers pipeline folder (model_index.json), its Hugging Face Hub id (org/name, from the "
                        "hub's cache), a student made by `sana-jax train distill`, or with --base a Wan2.1 student "
                        "checkpoint (CausVid's model.pt, Self-Forcing's self_forcing_dmd.pt) (default: the embedded "
                        "streaming default: a tiny 4-step student of the embedded default model, 64×64 coloured shapes that "
                        "leave one edge and come back at the other, e.g. 'a red circle moving left')")
    p.add_argument("--base", default=None,
                   help="Wan2.1 folder (Wan2.1-T2V-1.3B, original or diffusers layout) whose text encoder, tokenizer "
                        "and VAE a --model student checkpoint runs with")
    p.add_argument("--schedule", choices=["causvid", "self-forcing"], default=None,
                   help="a Wan student's per-chunk timesteps: CausVid's 1000, 757, 522 (shift 8) or Self-Forcing's "
                        "1000, 937.5, 833.3, 625 (shift 5); default: Self-Forcing's for a checkpoint holding "
                        "generator_ema, else CausVid's")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=POSITIVE_NUMBER, default=None, help="video length in seconds (default 10)")
    length.add_argument("--chunks", type=POSITIVE, default=None,
                        help="number of chunks instead of --seconds (chunk_frames·chunks + 1 latent frames; a Wan "
                             "student's chunks start at frame 0: chunk_frames·chunks)")
    p.add_argument("--chunk-frames", type=POSITIVE, default=None,
                   help="latent frames per chunk (default: the folder's — a distilled student's — else LongSANA's 10, "
                        "or 3 for a CausVid / Self-Forcing student)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--image", default=None,
                       help="first frame (PNG/JPEG): its latent is committed as the first context, then the stream "
                            "continues from it (resized and centre-cropped to the stream)")
    start.add_argument("--video", default=None,
                       help="clip to extend (mp4 …): its latents are committed and the output holds its frames, "
                            "then the new ones (its frame count must suit the VAE, e.g. 1 + 4k for Wan)")
    p.add_argument("--height", type=POSITIVE, default=None, help="pixels (default: the checkpoint's resolution)")
    p.add_argument("--width", type=POSITIVE, default=None, help="pixels (default: the checkpoint's resolution)")
    p.add_argument("--seed", type=SEED, default=0, help="random seed (the same seed gives the same video)")
    p.add_argument("--window", type=POSITIVE, default=None,
                   help="attend to the last N chunks only (default: the folder's — a distilled student's, the most "
                        "past its training showed it — else all earlier chunks: a running sum, or a Wan student's "
                        "KV cache as long as the stream)")
    p.add_argument("--sink", type=integer(0), default=0,
                   help="with --window, keep the first N chunks attended for ever (an attention sink; Wan students)")
    p.add_argument("--switch", action="append", default=[], metavar="CHUNK:PROMPT",
                   help="switch to PROMPT from chunk CHUNK on (repeatable), e.g. --switch '6:a cat sleeping'")
    p.add_argument("--motion-score", type=integer(0), default=None,
                   help="append ' motion score: N.' to the prompt (SANA-Video)")
    p.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="transformer and text-encoder dtype (bfloat16 on GPU)")
    add_weights_arg(p)
    p.add_argument("--fps", type=POSITIVE_NUMBER, default=None,
                   help="frame rate of the mp4 (default: the folder's, else SANA-Video's 16)")
    p.add_argument("--out", default="stream.mp4",
                   help="output mp4 path (default stream.mp4); an existing file is refused unless --overwrite. "
                        "Written live under a temporary name unique to the run (printed: watch it grow), its frames "
                        "counted back, then renamed; a failed write leaves nothing")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    add_mesh_args(p, "run the DiT sharded on a device mesh, e.g. context=2 or tensor=2,context=4: weights' heads / "
                     "MLP over tensor, each chunk's latent frames over context when they divide (else replicated); "
                     "data and fsdp are refused (a stream is one sample without a guidance batch); the VAE decodes "
                     "on one device (of each process)")
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


def start_frames(args, height: int, width: int):
    """--image / --video read and fitted to the stream's size (uint8), or None."""
    from sana_jax.commands.generate import load_image
    from sana_jax.errors import InputError
    from sana_jax.io.video import read_video
    from sana_jax.training.data import fit_frames

    if args.image is not None:
        return load_image(args.image, height, width)
    if args.video is None:
        return None
    try:
        frames = read_video(args.video)
    except Exception as e:  # the reader raises assorted errors for what is not a video
        raise InputError(f"--video {args.video}: cannot read it as a video ({e})") from e
    return fit_frames(frames, len(frames), height, width, f"--video {args.video}")


def run(args: argparse.Namespace) -> int:
    from sana_jax.errors import InputError
    from sana_jax.io.files import check_output_file
    from sana_jax.pipelines.components import PipelineFolder
    from sana_jax.pipelines.streaming import StreamingPipeline
    from sana_jax.pipelines.wan_components import is_wan_folder

    check_output_file(args.out, "--out", overwrite=args.overwrite)  # before anything is loaded or computed
    seconds = 10.0 if args.seconds is None and args.chunks is None else args.seconds
    switches = parse_switches(args.switch)
    if args.base is not None or (args.model is not None and is_wan_folder(args.model)):
        return _run_wan(args, seconds, switches)
    for name, value in (("--schedule", args.schedule), ("--sink", args.sink or None)):
        if value is not None:
            raise InputError(f"{name} is for Wan2.1 students (give --base, or a Wan2.1 --model folder)")
    if args.model is None:
        from sana_jax.demo import default_stream_model_path

        if not (default_stream_model_path() / "model_index.json").is_file():
            raise InputError(f"no --model and no embedded streaming default at {default_stream_model_path()}: give "
                             "a LongSANA / SANA-Video pipeline folder or a `sana-jax train distill` student")
        args.model = str(default_stream_model_path())
        say(f"using the embedded streaming default ({args.model}: 64×64 coloured shapes on a torus; pass --model "
            "for a LongSANA or distilled checkpoint)")
    folder = PipelineFolder.open(args.model)
    fps = args.fps if args.fps is not None else folder.defaults().get("fps") or 16.0
    # every check that needs no weights happens before loading them
    request = StreamingPipeline.check(folder, seconds=seconds, num_chunks=args.chunks,
                                      chunk_frames=args.chunk_frames, fps=fps, height=args.height,
                                      width=args.width, window=args.window, prompts_at=switches,
                                      dtype=args.dtype, weights=args.weights)
    given = start_frames(args, request.height, request.width)
    pipe = StreamingPipeline.from_pretrained(folder.root, dtype=args.dtype, motion_score=args.motion_score,
                                             progress=not args.quiet, fps=fps, mesh=mesh_from_args(args),
                                             weights=args.weights)
    return _stream(pipe, args, request, seconds, switches, given, fps)


def _run_wan(args: argparse.Namespace, seconds, switches) -> int:
    """A Wan2.1 student: ``--model`` checkpoint with ``--base`` folder, or a Wan2.1 ``--model`` folder."""
    from pathlib import Path

    from sana_jax.errors import InputError
    from sana_jax.models.wan import WanConfig
    from sana_jax.pipelines.components import PipelineFolder
    from sana_jax.pipelines.memory import check_wan_stream
    from sana_jax.pipelines.stream_chunks import check_stream, stream_settings
    from sana_jax.pipelines.streaming import WAN_SIZE, StreamingPipeline
    from sana_jax.pipelines.wan_components import STUDENT_CHUNK_FRAMES, WanFolder

    if args.motion_score is not None:
        raise InputError("--motion-score is SANA-Video's; a Wan2.1 student takes none")
    if args.model is None:
        raise InputError("--base needs --model: the student checkpoint (CausVid model.pt, Self-Forcing .pt)")
    if args.base is not None and not Path(args.model).exists():
        raise InputError(f"--model {args.model}: no such file or folder")
    base = WanFolder.open(args.base or args.model)  # the parts are checked before any weights are read
    patch = base.transformer_config().get("patch_size", [1, 2, 2])
    stored = None  # a `sana-jax train distill` student folder's stream settings
    if args.base is None and base.layout == "diffusers":
        stored = PipelineFolder.open(base.root).defaults().get("stream")
    settings = stream_settings(stored) if stored else None
    chunk_frames = args.chunk_frames or (settings.chunk_frames if settings else STUDENT_CHUNK_FRAMES)
    window = args.window if args.window is not None or settings is None else settings.window
    fps = args.fps or 16.0
    request = check_stream((4, 8), patch, WAN_SIZE, seconds=seconds, num_chunks=args.chunks,
                           chunk_frames=chunk_frames, fps=fps, height=args.height, width=args.width, window=window,
                           prompts_at=switches, aligned=True, sink=args.sink)
    cache = sum(request.chunks) if window is None else (window + args.sink) * chunk_frames
    check_wan_stream(WanConfig.from_diffusers(base.transformer_config(), str(base.transformer / "config.json")),
                     cache_frames=cache, height=request.height, width=request.width, dtype=args.dtype,
                     weights=args.weights)
    given = start_frames(args, request.height, request.width)
    options = {} if args.chunk_frames is None else {"chunk_frames": args.chunk_frames}
    pipe = StreamingPipeline.from_wan(base.root, args.model if args.base else None, dtype=args.dtype,
                                      schedule=args.schedule, progress=not args.quiet, fps=fps,
                                      mesh=mesh_from_args(args), weights=args.weights, **options)
    return _stream(pipe, args, request, seconds, switches, given, fps, sink=args.sink)


def _stream(pipe, args, request, seconds, switches, given, fps, **options) -> int:
    """Stream into ``--out`` live and print what was written and how fast."""
    from sana_jax.io.video import VideoWriter

    height, width, sizes = request.height, request.width, request.chunks
    start = {"video" if args.video else "image": given} if given is not None else {}
    # closed (published) when the stream ends or is stopped with Ctrl-C; removed if anything fails. Several
    # processes: process 0 writes, the others stream the same chunks with it and wait for its file at the end
    with one_writer() as is_writer:
        with VideoWriter(args.out, fps=fps, live=True, overwrite=args.overwrite) if is_writer \
                else contextlib.nullcontext() as writer:
            if writer is not None:
                print(f"writing {writer.tmp} live (renamed to {writer.path} when the stream ends)")
            result = pipe.stream(args.prompt, seconds=seconds, num_chunks=args.chunks,
                                 chunk_frames=args.chunk_frames, height=height, width=width, seed=args.seed,
                                 prompts_at=switches, window=args.window, writer=writer,
                                 progress=not args.quiet and is_writer, **start, **options)
    status = "interrupted: kept" if result.interrupted else "wrote"
    where = writer.path if writer is not None and writer.published else "nothing"
    if writer is None:
        status, where = "streamed", f"{args.out} with process 0 (which writes it)"
    print(f"{status} {where} ({result.frames} frames, {width}×{height}, {fps:g} fps, "
          f"{len(result.chunks)}/{len(sizes)} chunks)")
    ttff = "n/a" if result.time_to_first_frame_s is None else f"{result.time_to_first_frame_s:.2f} s"
    steady = "" if result.steady_fps is None else f", steady {result.steady_fps:.1f} FPS"
    print(f"time to first frame {ttff} (prompt and compilation included), {result.fps:.1f} FPS overall{steady}, "
          f"total {result.total_s:.1f} s, stream state {result.state_bytes / 2**20:.1f} MiB")
    return 130 if result.interrupted else 0

"""The ``sana-jax`` command line.

Every subcommand prints one clear line and exits with status 2 on bad input (a typed error), without a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time

from sana_jax.errors import SanaJaxError

DTYPES = ("float32", "bfloat16", "float16")


def _convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    import converters
    from sana_jax.errors import InputError

    dst = Path(args.dst)
    if dst.exists() and not args.overwrite:
        raise InputError(f"destination {dst} exists; pass --overwrite to replace it")
    start = time.perf_counter()
    model = converters.load(args.src, dtype=args.dtype, config=args.config, progress=not args.quiet)
    loaded = time.perf_counter()
    converters.save_orbax(model, dst, overwrite=args.overwrite)
    n = sum(x.size for x in _leaves(model))
    print(f"converted {args.src} → {dst}: {type(model).__name__}, {n / 1e6:,.1f} M parameters, "
          f"{args.dtype or 'checkpoint dtype'}; load {loaded - start:.1f} s, save {time.perf_counter() - loaded:.1f} s")
    return 0


def _leaves(model):
    import jax
    from flax import nnx

    return jax.tree.leaves(nnx.state(model, nnx.Param))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sana-jax", description="SANA-Video in JAX: convert PyTorch checkpoints, generate and refine video.")
    sub = parser.add_subparsers(dest="command", required=True)

    conv = sub.add_parser(
        "convert", help="convert a PyTorch checkpoint to a JAX (orbax) checkpoint",
        description="Convert a SANA-Video transformer checkpoint — a diffusers folder (transformer/ or the pipeline "
                    "root), a .safetensors file, or an original Sana .pth — into an orbax folder that "
                    "converters.load() and the pipelines read directly. The .pth is read without torch and without "
                    "executing its pickle. The destination is written under a temporary name and renamed when "
                    "complete.")
    conv.add_argument("src", help="diffusers folder, .safetensors / .safetensors.index.json, or .pth/.pt file")
    conv.add_argument("dst", help="destination folder (must not exist unless --overwrite)")
    conv.add_argument("--dtype", choices=DTYPES, default=None,
                      help="parameter dtype to store (default: the checkpoint's own)")
    conv.add_argument("--config", default=None,
                      help="diffusers config.json for checkpoints that carry none (original .pth); otherwise the "
                           "configuration is inferred from tensor shapes assuming 112-channel heads")
    conv.add_argument("--overwrite", action="store_true", help="replace an existing destination")
    conv.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    conv.set_defaults(run=_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except SanaJaxError as e:
        print(f"sana-jax {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sana-jax {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``sana-jax convert SRC DST``: any supported checkpoint → an orbax folder that ``converters.load`` reads."""

from __future__ import annotations

import argparse
import time

from sana_jax.commands import DTYPES
from sana_jax.commands.refine import add_weights_arg


def add_parser(sub) -> None:
    conv = sub.add_parser(
        "convert", help="convert a PyTorch checkpoint to a JAX (orbax) checkpoint",
        description="Convert a checkpoint — a diffusers folder (a component, or the pipeline root: its "
                    "transformer/ unless --component), a .safetensors file or sharded index, an original Sana or "
                    "Wan .pth, a native LTX-2 file — into an orbax folder that "
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
    conv.add_argument("--component", default=None,
                      help="which model to take: a pipeline folder's subfolder (default transformer), or a model "
                           "family of a file that holds several (native LTX-2: ltx2_vae, ltx2_connectors, …)")
    add_weights_arg(conv, "the model's")
    conv.add_argument("--overwrite", action="store_true", help="replace an existing destination")
    conv.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    conv.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import converters
    from sana_jax.io.files import check_output_folder

    dst = check_output_folder(Path(args.dst), "destination", overwrite=args.overwrite)  # before anything is read
    start = time.perf_counter()
    model = converters.load(args.src, dtype=args.dtype, config=args.config, component=args.component,
                            progress=not args.quiet, weights=args.weights)
    loaded = time.perf_counter()
    converters.save_orbax(model, dst, overwrite=args.overwrite)
    n = sum(x.size for x in _leaves(model))
    weights = f", {args.weights} Linear weights" if args.weights else ""
    print(f"converted {args.src} → {dst}: {type(model).__name__}, {n / 1e6:,.1f} M parameters, "
          f"{args.dtype or 'checkpoint dtype'}{weights}; load {loaded - start:.1f} s, "
          f"save {time.perf_counter() - loaded:.1f} s")
    return 0


def _leaves(model):
    import jax
    from flax import nnx

    return jax.tree.leaves(nnx.state(model, nnx.Param))



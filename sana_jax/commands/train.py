"""``sana-jax train {finetune,adapt,distill,demo}``: fine-tune a SANA-Video DiT on a latent cache, adapt it to another
VAE (the 2K recipe), distil it into a streaming student (:mod:`sana_jax.commands.distill`), or rebuild the embedded
default model."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sana_jax.demo.shapes import BACKGROUNDS, PATHS
from sana_jax.training.config import COMPUTE_DTYPES, LR_SCHEDULES, TIMESTEP_SAMPLING
from sana_jax.commands.hosts import add_args as add_mesh_args, mesh_from_args, one_writer, say
from sana_jax.commands.options import DECAY, FRACTION, POSITIVE, POSITIVE_NUMBER, SEED, integer, number, regex


def _optimisation_args(p) -> None:
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=POSITIVE, required=True,
                   help="optimiser steps in total (a resumed run continues to it, a finished one too unless "
                        "--schedule cosine)")
    g.add_argument("--batch-size", type=POSITIVE, default=8, help="samples per step (global, over the data axes)")
    g.add_argument("--lr", type=POSITIVE_NUMBER, default=1e-4, help="AdamW learning rate after warm-up")
    g.add_argument("--warmup", type=integer(0), default=0, help="linear warm-up steps")
    g.add_argument("--schedule", choices=LR_SCHEDULES, default="constant",
                   help="after warm-up: constant, or cosine decay to 0 at --steps")
    g.add_argument("--weight-decay", type=number(0), default=0.0, help="AdamW weight decay")
    g.add_argument("--grad-clip", type=number(0), default=1.0, help="global gradient-norm clip (0 = off)")
    g.add_argument("--ema", type=DECAY, default=None, metavar="DECAY",
                   help="keep an exponential moving average of the weights (e.g. 0.999); it is what gets exported")
    g.add_argument("--dtype", choices=COMPUTE_DTYPES, default="float32",
                   help="compute dtype; weights and optimiser state stay float32")
    g.add_argument("--remat", action="store_true", help="recompute each block in the backward pass (less memory)")
    g.add_argument("--trainable", type=regex, default=None, metavar="REGEX",
                   help="train only parameters whose name matches (e.g. '^blocks\\.' or 'attn2'); default: all")
    g.add_argument("--text-dropout", type=FRACTION, default=0.1,
                   help="probability of training on the empty prompt (what guidance uses)")
    g.add_argument("--flow-shift", type=POSITIVE_NUMBER, default=3.0,
                   help="timestep shift of the logit-normal sampling")
    g.add_argument("--pure-noise-fraction", type=FRACTION, default=0.0, metavar="P",
                   help="train this share of samples at σ = 1 exactly (pure noise), where sampling starts and the "
                        "logit-normal draws almost never go (default 0: SANA's recipe)")
    g.add_argument("--seed", type=SEED, default=0, help="noise, timesteps and data order are functions of it")
    g.add_argument("--save-every", type=POSITIVE, default=500, help="checkpoint interval in steps")
    g.add_argument("--keep", type=POSITIVE, default=3, help="checkpoints kept")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_mesh_args(p, "device mesh over every process's devices, e.g. data=8 or data=2,fsdp=4: batch over data/fsdp, "
                     "weights and optimiser state sharded over fsdp; with several hosts --out must be on a file "
                     "system they share (every process writes its part of the checkpoints there)")


def add_parser(sub) -> None:
    train = sub.add_parser("train", help="fine-tune, adapt to another VAE, distil into a streaming student, or "
                                         "rebuild the embedded default model",
                           description="Flow-matching training of the SANA-Video DiT (v = noise − x0, logit-normal "
                                       "timesteps with shift, AdamW, EMA, bf16, remat, orbax checkpoints that "
                                       "resume exactly: run the same command again to continue).")
    kinds = train.add_subparsers(dest="kind", required=True)

    fine = kinds.add_parser("finetune", help="fine-tune a SANA-Video DiT on a latent cache",
                            description="Train the DiT of --model on a cache made by `sana-jax cache`. --out gets "
                                        "the run (run.json, metrics.jsonl, checkpoints/) and, at the end, "
                                        "transformer/ in the diffusers layout (the EMA weights with --ema).")
    fine.add_argument("--model", required=True, help="pipeline folder, transformer folder or converted checkpoint")
    fine.add_argument("--data", required=True, help="latent cache folder (sana-jax cache)")
    fine.add_argument("--out", required=True, help="run folder (created, or resumed when it holds the same run)")
    _optimisation_args(fine)
    fine.set_defaults(run=run_finetune)

    adapt = kinds.add_parser(
        "adapt", help="the 2K recipe: move a SANA-Video DiT to another VAE's latents and train",
        description="Re-initialise exactly the patch embedding and the final projection of the --from DiT for the "
                    "latent channels of --vae (and --patch-size), keep every other weight, and train on --data "
                    "(a cache made with `sana-jax cache --vae` of the same VAE). --out gets the run and pipeline/: "
                    "a pipeline folder with the new transformer and links to --from's text encoder, tokenizer and "
                    "scheduler and to --vae.")
    adapt.add_argument("--from", dest="source", required=True, help="SANA-Video pipeline folder to start from")
    adapt.add_argument("--vae", required=True, help="the new VAE: a pipeline folder (its vae/) or a VAE folder")
    adapt.add_argument("--data", required=True, help="latent cache encoded with that VAE")
    adapt.add_argument("--out", required=True, help="run folder")
    adapt.add_argument("--patch-size", type=POSITIVE, default=None,
                       help="new spatial patch size (1 for the 32× LTX-2 VAE as SANA-Video 720p; default: keep)")
    _optimisation_args(adapt)
    adapt.set_defaults(run=run_adapt)

    demo = kinds.add_parser(
        "demo", help="rebuild the embedded default model from scratch (procedural shapes)",
        description="Render the procedural dataset, train the small VAE, cache, train the small DiT, and write a "
                    "pipeline folder like sana_jax/default_model (recipe.json records settings, times and the "
                    "held-out score). sana_jax/default_model was made in three runs: the defaults with --vae-from, "
                    "then --dit-from FOLDER --dit-steps 1100, then --dit-from FOLDER --target x0 --flow-shift 1 "
                    "--dit-steps 600 --dit-batch 16 (its recipe.json records all three; docs/default-model.md).")
    demo.add_argument("--out", required=True,
                      help="pipeline folder to write (refused if it exists, unless --overwrite)")
    demo.add_argument("--dit-steps", type=POSITIVE, default=None, help="DiT steps (default 1000)")
    demo.add_argument("--dit-batch", type=POSITIVE, default=None, help="DiT batch size (default 32)")
    demo.add_argument("--lr", type=POSITIVE_NUMBER, default=None, help="DiT peak learning rate (default 1e-3)")
    demo.add_argument("--paths", choices=PATHS, default=None,
                      help="anywhere: shapes travel half the frame from a random start; crossing: they "
                           "cross the frame edge to edge, so the direction fixes the position along the motion in "
                           "every frame; lane (default): crossing, near the middle across the motion too, so the "
                           "prompt alone nearly fixes every frame; wrap: a lane on a torus (what leaves one edge "
                           "re-enters from the other) at a steady speed, the world of unbounded streams")
    demo.add_argument("--timestep-sampling", choices=TIMESTEP_SAMPLING, default=None,
                      help="how training draws noise levels: SANA's logit-normal, or uniform before the shift "
                           "(default), which draws the high-noise end, where sampling decides the layout, as often "
                           "as the rest")
    demo.add_argument("--flow-shift", type=POSITIVE_NUMBER, default=None,
                      help="shift of the training noise levels, σ' = sσ / (1 + (s − 1)σ) (default 3; 1: as drawn)")
    demo.add_argument("--pure-noise-fraction", type=FRACTION, default=None, metavar="P",
                      help="train this share of DiT samples at σ = 1 exactly, where sampling starts (default 0.25)")
    demo.add_argument("--noise-scale", type=number(0), default=None, metavar="S",
                      help="wrap the DiT in EDM-style preconditioning (x0 from c_skip, c_out around the network, "
                           "its input noise scaled to at most S; sana_jax/models/preconditioning.py; default 0.1); "
                           "0: none, the plain velocity DiT")
    demo.add_argument("--target", choices=("x0", "edm"), default=None,
                      help="what the preconditioned DiT's network predicts: edm, Karras et al.'s skip form "
                           "x0 = c_skip·x + c_out·F (default), or x0, the clean latents at every noise level (an "
                           "edm --dit-from continues as x0)")
    demo.add_argument("--unnamed-background", choices=(*BACKGROUNDS, "any"), default=None,
                      help="the background of clips whose caption names none: one fixed background (default "
                           "black), or any of the three at random")
    demo.add_argument("--ema-decay", type=DECAY, default=None, metavar="D",
                      help="decay of the EMA of the DiT weights, which is what is exported (default 0.99)")
    demo.add_argument("--clips", type=POSITIVE, default=None, help="rendered clips (default 3000)")
    demo.add_argument("--vae-from", default=None, metavar="FOLDER",
                      help="reuse a trained VAE (e.g. sana_jax/default_model/vae) instead of training one")
    demo.add_argument("--dit-from", default=None, metavar="FOLDER",
                      help="start the DiT (and its text encoder) from an earlier demo pipeline folder instead of "
                           "from scratch: continue a run, e.g. on other --paths")
    demo.add_argument("--overwrite", action="store_true", help="replace --out")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    add_mesh_args(demo, "train the DiT on this device mesh, e.g. data=8 (batch over data/fsdp, weights sharded over "
                        "fsdp); with several processes each renders the clips and trains the small VAE itself, the "
                        "cache is encoded spread over them, and process 0 writes and scores --out")
    demo.set_defaults(run=run_demo)

    from sana_jax.commands.distill import add_parser as add_distill

    add_distill(kinds)


def _train_config(args, total_steps: int):
    from sana_jax.training import TrainConfig

    return TrainConfig(learning_rate=args.lr, warmup_steps=args.warmup, lr_schedule=args.schedule,
                       total_steps=total_steps, weight_decay=args.weight_decay, grad_clip=args.grad_clip or None,
                       ema_decay=args.ema, compute_dtype=args.dtype, remat=args.remat, flow_shift=args.flow_shift,
                       pure_noise_fraction=args.pure_noise_fraction,
                       text_dropout=args.text_dropout, trainable=args.trainable, batch_size=args.batch_size,
                       seed=args.seed)


def _check_cache(dataset, model, where: str) -> None:
    from sana_jax.errors import InputError

    channels = dataset.latents.shape[-1]
    if channels != model.config.in_channels:
        raise InputError(f"--data {where}: latents have {channels} channels, the transformer takes "
                         f"{model.config.in_channels}")
    if dataset.text.shape[-1] != model.config.caption_channels:
        raise InputError(f"--data {where}: caption embeddings are {dataset.text.shape[-1]}-wide, the transformer "
                         f"takes {model.config.caption_channels} (cache with the same text encoder)")


def _train(args, model, dataset) -> tuple[object, Path]:
    from sana_jax.training import Trainer
    from sana_jax.training.trainer import describe

    trainer = Trainer(model, _train_config(args, args.steps), mesh=mesh_from_args(args))
    counts = describe(trainer)
    say(f"training {counts['trainable'] / 1e6:,.2f} M of {counts['parameters'] / 1e6:,.2f} M parameters "
        f"({counts['trainable_tensors']} of {counts['tensors']} tensors) on {dataset.size} clips")
    start = time.perf_counter()
    state = trainer.fit(dataset, args.steps, run_dir=args.out, save_every=args.save_every, keep=args.keep,
                        progress=not args.quiet)
    say(f"trained to step {int(state['step'])} in {time.perf_counter() - start:.0f} s")
    return trainer.model_from(state, ema=True), Path(args.out)  # gathered on every process


def run_finetune(args: argparse.Namespace) -> int:
    import converters
    from sana_jax.io.files import check_output_folder
    from sana_jax.training import LatentDataset

    check_output_folder(args.out, "--out", resumable=True)  # a run folder: created, or resumed
    dataset = LatentDataset.open(args.data)
    model = converters.load(args.model)
    _check_cache(dataset, model, args.data)
    final, out = _train(args, model, dataset)
    with one_writer() as writer:
        if writer:
            print(f"wrote {converters.export_safetensors(final, out / 'transformer')} (diffusers layout)")
    return 0


def run_adapt(args: argparse.Namespace) -> int:
    import converters
    from sana_jax.commands.cache import load_vae
    from sana_jax.config import read_json
    from sana_jax.errors import InputError
    from sana_jax.pipelines.components import PipelineFolder, write_pipeline
    from sana_jax.io.files import check_output_folder
    from sana_jax.training import LatentDataset
    from sana_jax.training.adapt import REINITIALISED, adapt_transformer

    check_output_folder(args.out, "--out", resumable=True)  # a run folder: created, or resumed
    source = PipelineFolder.open(args.source)
    dataset = LatentDataset.open(args.data)
    vae = load_vae(args.vae)
    channels = vae.config.to_diffusers().get("latent_channels") or vae.config.to_diffusers().get("z_dim")
    if dataset.meta.get("vae") not in (None, type(vae).__name__) or dataset.latents.shape[-1] != channels:
        raise InputError(f"--data {args.data} was not encoded with --vae {args.vae} ({dataset.meta.get('vae')}, "
                         f"{dataset.latents.shape[-1]} channels vs {type(vae).__name__}, {channels})")
    patch = None if args.patch_size is None else (1, args.patch_size, args.patch_size)
    model = adapt_transformer(converters.load(source.component("transformer")), channels=channels,
                              patch_size=patch, seed=args.seed)
    say(f"re-initialised {', '.join(REINITIALISED)} for {channels} channels, patch {model.config.patch_size}")
    _check_cache(dataset, model, args.data)
    final, out = _train(args, model, dataset)
    index = dict(source.index)
    vae_root = Path(args.vae) / "vae" if (Path(args.vae) / "model_index.json").exists() else Path(args.vae)
    vae_class = read_json(vae_root / "config.json").get("_class_name")
    index["vae"] = ["diffusers" if vae_class.startswith("Autoencoder") else "sana_jax", vae_class]
    links = {"text_encoder": source.component("text_encoder"), "tokenizer": source.component("tokenizer"),
             "scheduler": source.component("scheduler"), "vae": vae_root}
    with one_writer() as writer:
        if writer:
            pipeline = write_pipeline(out / "pipeline", index, final, links)
            print(f"wrote {pipeline} (sana-jax generate --model {pipeline})")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from sana_jax.demo.recipe import make_default_model
    from sana_jax.io.files import check_output_folder

    check_output_folder(args.out, "--out", overwrite=args.overwrite)  # before any work
    overrides = {k: v for k, v in (("dit_steps", args.dit_steps), ("clips", args.clips), ("vae_from", args.vae_from),
                                   ("dit_from", args.dit_from),
                                   ("dit_batch", args.dit_batch), ("learning_rate", args.lr),
                                   ("paths", args.paths), ("timestep_sampling", args.timestep_sampling),
                                   ("pure_noise_fraction", args.pure_noise_fraction),
                                   ("flow_shift", args.flow_shift), ("target", args.target),
                                   ("ema_decay", args.ema_decay))
                 if v is not None}
    if args.noise_scale is not None:  # 0 asks for the plain velocity model explicitly
        overrides["noise_scale"] = args.noise_scale or None
    if args.unnamed_background is not None:
        overrides["unnamed_background"] = None if args.unnamed_background == "any" else args.unnamed_background
    record = make_default_model(args.out, progress=not args.quiet, overwrite=args.overwrite,
                                mesh=mesh_from_args(args), **overrides)
    say(f"times (s): {json.dumps({k: round(v) for k, v in record['times'].items()})}")
    return 0

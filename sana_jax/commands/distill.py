"""``sana-jax train distill``: a bidirectional SANA-Video or Wan2.1 teacher folder → a few-step block-causal student
folder that ``sana-jax stream --model`` takes (CausVid: ODE-pair initialisation, then DMD with a Self-Forcing
rollout). The folders: :mod:`sana_jax.distill.teachers`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sana_jax.distill.config import DistillConfig
from sana_jax.training.config import COMPUTE_DTYPES
from sana_jax.commands.hosts import add_args as add_mesh_args, mesh_from_args, one_writer, say
from sana_jax.commands.options import DECAY, POSITIVE, POSITIVE_NUMBER, SEED, integer, number

_DEFAULTS = DistillConfig()


def add_parser(kinds) -> None:
    p = kinds.add_parser(
        "distill", help="distil a SANA-Video or Wan2.1 pipeline into a few-step block-causal student that streams "
                        "(CausVid)",
        description="Steps [0, --ode-steps) regress the student onto the teacher's ODE trajectories (--ode-pairs of "
                    "them, sampled once with guidance and kept in OUT/ode_pairs); the next --steps run DMD: the "
                    "student generates clips chunk by chunk on its own outputs (Self-Forcing), a critic learns "
                    "their flow, and every --critic-updates steps the student follows the teacher's guided score "
                    "minus the critic's. Run the same command again to resume. OUT/pipeline is the student: "
                    "sana-jax stream --model OUT/pipeline.")
    p.add_argument("--teacher", required=True, help="SANA-Video pipeline folder (model_index.json) to distil, or a "
                                                    "Wan2.1 folder (diffusers WanPipeline or the original layout)")
    p.add_argument("--prompts", required=True, help="text file, one training prompt per line")
    p.add_argument("--out", required=True, help="run folder (created, or resumed when it holds the same run)")
    p.add_argument("--steps", type=POSITIVE, required=True, help="DMD steps (after the ODE steps)")
    p.add_argument("--chunk-frames", type=POSITIVE, default=_DEFAULTS.chunk_frames,
                   help="latent frames per chunk the student generates at once (SANA-Video: the first takes the "
                        "remainder; Wan2.1: the clip's latent frames must be a multiple of it)")
    p.add_argument("--student-steps", type=POSITIVE, default=len(_DEFAULTS.student_timesteps),
                   help="denoising steps per chunk (4: LongSANA's t = 1000, 960, 889, 727; else evenly spaced)")
    p.add_argument("--timesteps", default=None, metavar="T1,T2,...",
                   help="the student's timesteps per chunk instead of --student-steps' (decreasing, in (0, 1000]), "
                        "e.g. 1000,750,500,250")
    p.add_argument("--ode-pairs", type=integer(0), default=0, help="teacher ODE trajectories to sample for ODE init")
    p.add_argument("--ode-steps", type=integer(0), default=0, help="ODE-regression steps before DMD")
    p.add_argument("--frames", type=POSITIVE, default=None, help="training clip length in frames (default: the "
                                                           "teacher's; Wan2.1: 81)")
    p.add_argument("--height", type=POSITIVE, default=None, help="training height (default: the teacher's; Wan2.1: "
                                                           "480)")
    p.add_argument("--width", type=POSITIVE, default=None, help="training width (default: the teacher's; Wan2.1: "
                                                          "832)")
    p.add_argument("--guidance", type=number(0), default=None,
                   help="the teacher's classifier-free guidance (default: the folder's, else 3.0 as LongSANA)")
    p.add_argument("--critic-updates", type=POSITIVE, default=_DEFAULTS.critic_updates,
                   help="critic updates per student update")
    p.add_argument("--lr", type=POSITIVE_NUMBER, default=_DEFAULTS.learning_rate, help="the student's AdamW rate")
    p.add_argument("--critic-lr", type=POSITIVE_NUMBER, default=_DEFAULTS.critic_learning_rate,
                   help="the critic's rate")
    p.add_argument("--ema", type=DECAY, default=_DEFAULTS.ema_decay, metavar="DECAY",
                   help="EMA of the student, which is what is exported (0: none)")
    p.add_argument("--dmd-shift", type=POSITIVE_NUMBER, default=_DEFAULTS.dmd_shift,
                   help="flow shift of DMD's noise levels (uniform in [0.02, 0.98], then shifted)")
    p.add_argument("--batch-size", type=POSITIVE, default=_DEFAULTS.batch_size, help="clips per step (global)")
    p.add_argument("--dtype", choices=COMPUTE_DTYPES, default="float32",
                   help="compute dtype; weights and optimiser states stay float32")
    p.add_argument("--remat", action="store_true", help="recompute each block in the backward pass (less memory)")
    p.add_argument("--seed", type=SEED, default=0, help="noise, exits, prompts and timesteps are functions of it")
    p.add_argument("--save-every", type=POSITIVE, default=200, help="checkpoint interval in steps")
    p.add_argument("--keep", type=POSITIVE, default=3, help="checkpoints kept")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    add_mesh_args(p, "device mesh over every process's devices, e.g. data=8 or data=2,fsdp=4: batch over data/fsdp; "
                     "teacher, student, critic and both optimisers sharded over fsdp; the ODE pairs are sampled "
                     "with their batches spread over its devices. With several hosts --out must be on a file system "
                     "they share (every process writes its part of the checkpoints there)")
    p.set_defaults(run=run)


def read_prompts(path: str) -> list[str]:
    from sana_jax.errors import InputError

    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise InputError(f"--prompts {path}: cannot read it ({e.strerror})") from e
    prompts = [ln.strip() for ln in lines if ln.strip()]
    if not prompts:
        raise InputError(f"--prompts {path}: no prompts (one per line)")
    return prompts


def config_from(args, guidance: float) -> DistillConfig:
    from sana_jax.distill.config import default_timesteps
    from sana_jax.errors import InputError

    timesteps = default_timesteps(args.student_steps)
    if args.timesteps:
        try:
            timesteps = tuple(float(t) for t in args.timesteps.split(","))
        except ValueError as e:
            raise InputError(f"--timesteps {args.timesteps!r}: expected numbers separated by commas") from e
    return DistillConfig(chunk_frames=args.chunk_frames, student_timesteps=timesteps,
                         guidance_scale=guidance, ode_steps=args.ode_steps, critic_updates=args.critic_updates,
                         learning_rate=args.lr, critic_learning_rate=args.critic_lr, ema_decay=args.ema or None,
                         dmd_shift=args.dmd_shift, compute_dtype=args.dtype, remat=args.remat,
                         batch_size=args.batch_size, seed=args.seed)


def _ode_pairs(teacher, trainer, prompts, args, folder: Path):
    """The run's ODE pairs: read back from ``folder`` when an earlier try wrote them, else sampled (every process
    ends with all of them) and saved by process 0."""
    from sana_jax.distill.data import make_ode_pairs
    from sana_jax.training import LatentDataset

    # without pairs there are only the prompts, encoded again: no process may read what process 0 writes below
    if args.ode_pairs and (folder / "cache.json").is_file():
        return LatentDataset.open(folder)
    text, mask, null_text, null_mask = teacher.encode(prompts)
    pairs = make_ode_pairs(teacher.transformer, text, mask, null_text, null_mask, count=args.ode_pairs,
                           latent_shape=trainer.latent_shape, student_sigmas=trainer.student_sigmas,
                           guidance_scale=trainer.config.guidance_scale, substeps=trainer.config.ode_substeps,
                           seed=args.seed, captions=prompts, batch_size=max(1, args.batch_size),
                           progress=not args.quiet, mesh=trainer.mesh)
    with one_writer() as writer:
        if writer and not (folder / "cache.json").is_file():
            pairs.save(folder)
    return pairs


def run(args: argparse.Namespace) -> int:
    from sana_jax.distill.data import DistillData
    from sana_jax.distill.teachers import open_teacher
    from sana_jax.distill.trainer import DistillTrainer
    from sana_jax.errors import InputError
    from sana_jax.io.files import check_output_folder

    check_output_folder(args.out, "--out", resumable=True)  # a run folder: created, or resumed
    if args.steps < 0 or args.ode_steps < 0 or args.steps + args.ode_steps < 1:
        raise InputError("--steps and --ode-steps must be >= 0 and train at least one step in all")
    if args.ode_steps and args.ode_pairs < 1:
        raise InputError(f"--ode-steps {args.ode_steps} needs ODE pairs to regress onto: give --ode-pairs N")
    prompts = read_prompts(args.prompts)
    # SANA-Video or Wan2.1 (either layout); sizes checked from the configs, before anything loads
    teacher = open_teacher(args.teacher, frames=args.frames, height=args.height, width=args.width,
                           chunk_frames=args.chunk_frames)
    config = config_from(args, args.guidance if args.guidance is not None else teacher.guidance)
    latent_shape = teacher.latent_shape

    mesh = mesh_from_args(args)  # a bad spec is refused before the weights load
    teacher.load(progress=not args.quiet)
    trainer = DistillTrainer(teacher.transformer, config, latent_shape=latent_shape, mesh=mesh)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = DistillData(_ode_pairs(teacher, trainer, prompts, args, out / "ode_pairs"), config.ode_steps)
    total = config.ode_steps + args.steps
    say(f"distilling into a {len(trainer.student_sigmas)}-step causal {trainer.ops.name} student: chunks "
        f"{trainer.chunks} of latents {latent_shape}, {len(prompts)} prompts, {data.pairs.size} ODE pairs, "
        f"{config.ode_steps} ODE + {args.steps} DMD steps")
    start = time.perf_counter()
    state = trainer.fit(data, total, run_dir=out, save_every=args.save_every, keep=args.keep,
                        progress=not args.quiet)
    say(f"trained to step {int(state['step'])} in {time.perf_counter() - start:.0f} s")

    stream = {"chunk_frames": config.chunk_frames, "timesteps": list(config.student_timesteps),
              "shift": config.student_shift, "window": max(len(trainer.chunks) - 1, 1)}  # the most past it saw
    student = trainer.model_from(state, ema=True)  # gathered on every process
    with one_writer() as writer:
        if writer:
            pipeline = teacher.write_student(out / "pipeline", student, stream)
            print(f"wrote {pipeline} (sana-jax stream PROMPT --model {pipeline})")
    return 0

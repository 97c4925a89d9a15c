"""The default DiT's learning curve: its velocity error against the ideal denoiser's, and its held-out score, as
training goes on.

    python experiments/default_model/curve.py      # 3,000 steps of the shipped recipe at batch 8, ~30 min on 2 cores
    python experiments/default_model/curve.py --steps 250 500 --batch 4 --name my_curve
    python experiments/default_model/curve.py --timestep-sampling uniform --pure-noise-fraction 0.25 --name ..._top_cpu

It trains the demo DiT as ``sana-jax train demo`` does (the shipped PatchVAE, 3,000 procedural clips, text dropout
0.1, flow shift 3, EMA 0.99) but at a constant learning rate after warm-up, so the curve is not bent by a decay
schedule. At each of ``--steps`` it measures, with the EMA weights, the velocity error of
``experiments/default_model/sigma.py`` on the first ``--prompts`` held-out prompts beside the ideal denoiser's, and
generates and scores all 16 held-out prompts. The question it answers: is the DiT still closing the gap to the
ideal at the noise levels where the sampler lays the video out, and how fast?
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import device_description, write_result  # noqa: E402
from experiments.default_model import RESULTS  # noqa: E402
from experiments.default_model.sigma import jitted_velocity, measure_prompt  # noqa: E402


def main() -> None:
    import tempfile

    import converters
    from sana_jax.training.config import TIMESTEP_SAMPLING
    from sana_jax.demo import default_model_path, recipe, shapes
    from sana_jax.pipelines import SanaVideoPipeline
    from sana_jax.training import TrainConfig, Trainer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[250, 500, 1000, 2000, 3000],
                        help="where to measure (optimiser steps, increasing)")
    parser.add_argument("--batch", type=int, default=8, help="clips per step")
    parser.add_argument("--lr", type=float, default=5e-4, help="learning rate after 100 warm-up steps")
    parser.add_argument("--paths", choices=shapes.PATHS, default="anywhere", help="the clips' paths")
    parser.add_argument("--timestep-sampling", choices=TIMESTEP_SAMPLING, default="logit_normal",
                        help="training noise levels (as `sana-jax train demo`)")
    parser.add_argument("--pure-noise-fraction", type=float, default=0.0, help="share of samples at σ = 1")
    parser.add_argument("--prompts", type=int, default=8, help="held-out prompts the velocity error is measured on")
    parser.add_argument("--clips", type=int, default=136, help="clips per prompt for the error (8 evaluated)")
    parser.add_argument("--name", default="default_model_curve_cpu", help="results file name")
    args = parser.parse_args()
    if args.steps != sorted(set(args.steps)) or args.steps[0] < 1:
        parser.error("--steps must be positive and increasing")

    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        frames, captions = recipe.render_clips(recipe.DEFAULTS["clips"], 0, args.paths)
        vae = converters.load(str(default_model_path() / "vae"))
        pipe, dataset = recipe.untrained_pipeline(Path(tmp), vae, frames, captions, seed=0)
        config = TrainConfig(learning_rate=args.lr, warmup_steps=100, lr_schedule="constant", ema_decay=0.99,
                             text_dropout=0.1, flow_shift=3.0, batch_size=args.batch, seed=0,
                             timestep_sampling=args.timestep_sampling, pure_noise_fraction=args.pure_noise_fraction)
        trainer = Trainer(pipe.transformer, config)
        state = None
        for step in args.steps:
            state = trainer.fit(dataset, step, state=state, progress=False, log_every=250)
            model = trainer.model_from(state, ema=True)
            folder = recipe.write_pipeline_folder(Path(tmp) / f"step{step}", model, pipe.vae, pipe.text_encoder)
            trained = SanaVideoPipeline.from_pretrained(folder)
            velocity = jitted_velocity(trained)
            errors = [measure_prompt(trained, velocity, triple, paths=args.paths, clips=args.clips, evaluate=8, seed=i)
                      for i, triple in enumerate(shapes.HELD_OUT[:args.prompts])]
            quality = recipe.evaluate(trained, shapes.held_out_prompts(), seed=0)
            row = {"step": step, "clips_seen": step * args.batch, "elapsed_s": round(time.perf_counter() - start),
                   "model": {s: float(np.mean([e["model"][s] for e in errors])) for s in errors[0]["model"]},
                   "ideal_denoiser": {s: float(np.mean([e["ideal_denoiser"][s] for e in errors]))
                                      for s in errors[0]["model"]},
                   "held_out": {k: quality[k] for k in ("score", "colour", "direction")}}
            rows.append(row)
            print(f"step {step}: error {({s: round(v, 3) for s, v in row['model'].items()})}, "
                  f"held-out {row['held_out']}", flush=True)
    result = {"device": device_description(), "jax": jax.__version__, "settings": vars(args),
              "ideal_denoiser": rows[0]["ideal_denoiser"], "curve": rows}
    print("wrote", write_result(args.name, result, RESULTS))


if __name__ == "__main__":
    main()

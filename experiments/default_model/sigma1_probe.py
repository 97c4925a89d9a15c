"""Can the demo DiT learn its σ = 1 prediction, the one the sampler lays the video out from, and how fast?

    python experiments/default_model/sigma1_probe.py                 # 400 steps, lane clips, the demo DiT
    python experiments/default_model/sigma1_probe.py --steps 1200 --lr 2e-3 --width 256 --name sigma1_probe_wide

A fresh demo DiT is trained on nothing but σ = 1 (input: pure noise ε; target: ``v = ε − x0``), with the VAE and the
frozen text encoder of ``--model``. At σ = 1 the best possible prediction is ``x0̂ = E[x0 | caption]``, so its error
can be set beside bounds computed from the clips themselves (:func:`sigma1_bounds`): predicting zero, the clips' mean,
the mean of the clips whose caption matches but for the direction word, and the caption's own mean.

Every ``--every`` steps it reads the motion out of ``x0̂`` for "a green square moving {left,right,up,down}"
(averaged over 16 noises) as the shape's travel along each prompt's direction (:func:`prompted_travel`). Only the
mean over the four directions says whether the prompt moves the shape: a drift the same for every prompt (say right
and down) reads +, −, +, − on (right, left, down, up) and averages to zero.

``--input zero`` sets the noise to zero (input zeros, target ``−x0``): a plain regression of the clip from the caption,
which measures what the noise in the input costs. (A run with the noise in the input but ``x0`` as the target, so
that nothing has to be copied through, learns as slowly as the σ = 1 task: it is the noise in the input that slows
the reading of the caption, not copying it.)

``--input-scale 0.1 --target x0`` is EDM-style preconditioning around the same network: the input scaled down, the
output no longer a copy of it (at σ = 1 this is :class:`sana_jax.models.preconditioning.FlowPreconditioning` with
``noise_scale`` 0.1; this probe wraps a plain DiT by hand). With both (and only both), on one background
(``--background black``), the DiT lays out the prompts' motion from pure noise as fast as with no noise at all; on the
recipe's three backgrounds it shows none within 800 steps (there a prompt that names no background asks for a blend
of the three); with those clips on one background (``--unnamed-background black``) it lays out the full motion by step
900 (``results/default_model_motion_experiments_cpu.json``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import device_description, write_result  # noqa: E402
from experiments.default_model import RESULTS  # noqa: E402
from experiments.default_model.sigma import centroid_travel  # noqa: E402

PROBE_TRIPLE = ("green", "square")  # shape and colour of the prompts the motion is read from
PROBE_NOISES = 16


def sigma1_bounds(latents: np.ndarray, captions: list[str]) -> dict:
    """Mean squared σ = 1 error of predictors that know nothing (zero), the data (its mean), the caption but for its
    direction word, and the whole caption (each caption's mean: the best any model can do on these clips)."""
    from sana_jax.demo import shapes

    def grouped(key) -> float:
        groups = defaultdict(list)
        for i, caption in enumerate(captions):
            groups[key(caption)].append(i)
        return float(sum(np.square(latents[ix] - latents[ix].mean(0)).sum() for ix in groups.values()) / latents.size)

    def without_direction(caption: str) -> str:
        return " ".join("<direction>" if w in shapes.DIRECTIONS else w for w in caption.split())

    return {"zero": float(np.mean(np.square(latents))), "data_mean": grouped(lambda c: ""),
            "caption_without_direction": grouped(without_direction), "caption": grouped(lambda c: c)}


def prompted_travel(x0_hats: dict[str, np.ndarray]) -> dict:
    """Travel (latent cells) of the shape in each direction's mean prediction ``x0_hats[direction]`` (T, h, w, C),
    along that direction, and their mean: the part of the motion the prompt decides."""
    from sana_jax.demo import shapes

    each = {d: centroid_travel(x, shapes.DIRECTIONS[d]) for d, x in x0_hats.items()}
    return {"by_direction": each, "prompted": float(np.mean(list(each.values())))}


def encode_training_set(pipe, count: int, *, paths: str, background: str, seed: int,
                        unnamed_background: str | None = None):
    """(latents, captions): ``count`` clips as the recipe renders them, or all on one fixed, never-named
    ``background``, encoded by ``pipe``'s VAE."""
    from sana_jax.demo.recipe import render_clips

    videos, captions = render_clips(count, seed, paths, background=None if background == "any" else background,
                                    unnamed_background=unnamed_background)
    latents = np.concatenate([np.asarray(pipe.encode_video(videos[i:i + 128].astype(np.float32) / 127.5 - 1))
                              for i in range(0, count, 128)])
    return latents, captions


def main() -> None:
    import dataclasses

    import optax
    from flax import nnx

    from sana_jax.demo import default_model_path, models, shapes
    from sana_jax.models.sana_video import SanaVideoTransformer
    from sana_jax.pipelines import SanaVideoPipeline

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(default_model_path()), help="pipeline folder for the VAE and text "
                        "encoder (default: shipped)")
    parser.add_argument("--paths", choices=shapes.PATHS, default="lane", help="the clips' paths (default lane)")
    parser.add_argument("--background", choices=("any", *shapes.BACKGROUNDS), default="any",
                        help="any: as the recipe (named in half the captions); or one fixed background, never named")
    parser.add_argument("--unnamed-background", choices=shapes.BACKGROUNDS, default=None,
                        help="with --background any: clips whose caption names no background are on this one")
    parser.add_argument("--input", choices=("noise", "zero"), default="noise",
                        help="zero: no noise at all (input zeros, target −x0), a plain caption-to-clip regression")
    parser.add_argument("--input-scale", type=float, default=1.0, help="multiply the DiT's input by this")
    parser.add_argument("--target", choices=("velocity", "x0"), default="velocity",
                        help="what the DiT outputs: the flow velocity (SANA's) or x0 (nothing to copy through)")
    parser.add_argument("--width", type=int, default=models.transformer_config().inner_dim,
                        help="DiT width, a multiple of 32 (default: the demo's)")
    parser.add_argument("--clips", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--every", type=int, default=100, help="read loss and travel every this many steps")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW, constant, gradients clipped at norm 1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="default_model_sigma1_probe_cpu", help="results file name")
    args = parser.parse_args()

    pipe = SanaVideoPipeline.from_pretrained(args.model)
    latents, captions = encode_training_set(pipe, args.clips, paths=args.paths, background=args.background,
                                            seed=args.seed, unnamed_background=args.unnamed_background)
    cond, _ = pipe.encode_prompt(captions, None)
    text, mask = np.asarray(cond["text"]), np.asarray(cond["mask"])
    bounds = sigma1_bounds(latents, captions)
    print("σ = 1 bounds on these clips:", {k: round(v, 3) for k, v in bounds.items()})

    heads = args.width // 32
    # the plain DiT (no noise_scale): this probe wraps the network itself (--input-scale, --target)
    config = dataclasses.replace(models.transformer_config(), num_attention_heads=heads,
                                 num_cross_attention_heads=heads, cross_attention_dim=args.width,
                                 in_channels=latents.shape[-1], out_channels=latents.shape[-1])  # the VAE's
    graph, params = nnx.split(SanaVideoTransformer(config, rngs=nnx.Rngs(args.seed + 1)), nnx.Param)
    optimiser = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(args.lr, weight_decay=0.0))
    opt_state = optimiser.init(params)
    draw = jax.random.normal if args.input == "noise" else (lambda key, shape: jnp.zeros(shape))
    sigma_1 = 1000.0

    def predict_x0(p, eps, text_, mask_):
        out = nnx.merge(graph, p)(args.input_scale * eps, text_, jnp.full((eps.shape[0],), sigma_1), mask_)
        return out if args.target == "x0" else eps - out  # velocity: x0̂ = x_σ − σ·v̂ at σ = 1

    def loss_fn(p, x0, text_, mask_, key):  # at σ = 1 the velocity error equals the x0 error: v̂ − v = x0 − x0̂
        return jnp.mean(jnp.square(predict_x0(p, draw(key, x0.shape), text_, mask_) - x0))

    @jax.jit
    def step(p, o, x0, text_, mask_, key):
        loss, grads = jax.value_and_grad(loss_fn)(p, x0, text_, mask_, key)
        updates, o = optimiser.update(grads, o, p)
        return optax.apply_updates(p, updates), o, loss

    @jax.jit
    def mean_x0_hat(p, eps, text_, mask_):
        return jnp.mean(predict_x0(p, eps, text_, mask_), axis=0)

    probes = {}
    for direction in shapes.DIRECTIONS:
        c, _ = pipe.encode_prompt([shapes.caption(*PROBE_TRIPLE, direction)] * PROBE_NOISES, None)
        probes[direction] = (c["text"], c["mask"])
    probe_noise = draw(jax.random.key(args.seed + 9), (PROBE_NOISES, *latents.shape[1:]))

    rng, readings, losses, start = np.random.default_rng(args.seed), [], [], time.perf_counter()
    for i in range(args.steps):
        idx = rng.integers(len(latents), size=args.batch)
        params, opt_state, loss = step(params, opt_state, jnp.asarray(latents[idx]), jnp.asarray(text[idx]),
                                       jnp.asarray(mask[idx]), jax.random.key(args.seed * 100003 + i))
        losses.append(float(loss))
        if (i + 1) % args.every == 0 or i + 1 == args.steps:
            travel = prompted_travel({d: np.asarray(mean_x0_hat(params, probe_noise, *tm)) for d, tm in probes.items()})
            readings.append({"step": i + 1, "loss": float(np.mean(losses[-args.every:])), "travel_cells": travel,
                             "elapsed_s": time.perf_counter() - start})
            print(f"step {i + 1}: loss {readings[-1]['loss']:.3f}, travel along the prompt {travel['prompted']:+.2f} "
                  f"cells (by direction {({d: round(t, 2) for d, t in travel['by_direction'].items()})})", flush=True)

    directions = np.asarray([shapes.parse_prompt(c)[1] for c in captions])
    clips_travel = prompted_travel({d: latents[directions == d].mean(0) for d in shapes.DIRECTIONS})
    print(f"the clips' own mean per direction travels {clips_travel['prompted']:+.2f} cells along it")
    path = write_result(args.name, {
        "benchmark": "default_model_sigma1_probe", "device": device_description(), "settings": vars(args),
        "dit_parameters": int(sum(x.size for x in jax.tree.leaves(params))), "sigma_1_bounds": bounds,
        "clips_travel_cells": clips_travel, "readings": readings}, RESULTS)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

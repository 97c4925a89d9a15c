"""Where the default model's flow-matching error sits, by noise level, against what is learnable there.

    python experiments/default_model/sigma.py                    # the shipped model, the data it was trained on
    python experiments/default_model/sigma.py --model OUT --paths crossing   # a model from `sana-jax train demo`
    python experiments/default_model/sigma.py --sample --handover 0.95 0.9 0.85 0.8 0.7 0.6   # what the results hold

For each of the 16 held-out prompts it renders clips of that exact (colour, shape, direction), encodes them, and
measures the DiT's velocity error ``mean((v̂ − (ε − x0))²)`` at several σ on fixed noise. At σ = 1 the input is pure
noise, so the best possible prediction is ``v = ε − E[x0 | prompt]`` and its error is the spread of the clips
around their mean. Three such references are printed beside the model:

* ``zero``: ``E[x0] = 0`` (latents are normalised, so this is the "knows nothing" prior);
* ``frame_mean``: each frame's spatial mean latent (background colour, no shape, no position);
* ``conditional_mean``: the mean latent of other clips with the same prompt: the shape's path is in it.

At every σ it also prints the error of the **ideal denoiser** (:func:`ideal_velocity`): the exact posterior mean
``E[x0 | x_σ]`` over the reference clips of the prompt. It is what a DiT that had fitted this data would reach, so the
gap between the two rows is how far the model is from learnt, σ by σ. With a finite reference set that posterior
collapses onto the nearest reference as σ falls, so below σ ≈ 0.7 its error is an over-estimate (it rises again at
0.5); at high σ, where the layout is decided, it is tight. ``--sample`` runs that same ideal denoiser
through the pipeline's own sampler, decoder and scorer on the 16 prompts, which checks everything but the DiT.
``--handover S`` samples with the ideal denoiser while σ > S and the DiT below it: the highest S that still gives
the prompted videos is the noise level below which the DiT keeps the layout it is handed.

Beside each error it prints a **localisation error**: the mean distance, in latent cells, between where the
prediction ``x0̂`` and the clean clip have the shape in each frame (:func:`frame_centroids`). It says whether a
denoiser finds the shape in the noise, which the layout and so the motion depend on.

It also reads the motion out of the σ = 1 prediction (``x0̂ = x_σ − σ·v̂``, averaged over noise draws): how far the
shape's latent centroid moves along the prompt's direction from the first frame to the last, against the same read
from the clips' mean. The sampler's first steps run at σ ≈ 1 (DPM-solver++, shift 3: 1.0, 0.98, 0.97, …); a model
whose σ = 1 prediction holds no motion lays out the video from the noise alone.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import device_description, write_result  # noqa: E402
from experiments.default_model import RESULTS  # noqa: E402

SIGMAS = (1.0, 0.99, 0.97, 0.95, 0.9, 0.8, 0.7, 0.5)


def frame_centroids(latents: np.ndarray) -> np.ndarray:
    """(T, 2) x, y (latent cells) of the centroid of each frame's deviation from its spatial median latent, the
    median deviation subtracted so that the background does not pull it to the centre. ``latents``: (T, h, w, C)."""
    t, h, w, c = latents.shape
    median = np.median(latents.reshape(t, h * w, c), axis=1)[:, None, None]
    weight = np.linalg.norm(latents - median, axis=-1)
    weight = np.maximum(weight - np.median(weight, axis=(1, 2), keepdims=True), 0.0) + 1e-9
    ys, xs = np.mgrid[:h, :w]
    return np.stack([(weight * xs).sum((1, 2)) / weight.sum((1, 2)), (weight * ys).sum((1, 2)) / weight.sum((1, 2))],
                    axis=-1)


def centroid_travel(latents: np.ndarray, direction: tuple[int, int]) -> float:
    """Displacement (latent cells) along ``direction`` of :func:`frame_centroids`, first frame to last."""
    centres = frame_centroids(latents)
    return float((centres[-1] - centres[0]) @ np.asarray(direction, np.float64))


def localisation_error(x0_hat: np.ndarray, x0: np.ndarray) -> float:
    """Mean distance (latent cells) between the per-frame centroids of predicted and true clean clips (N, T, h, w, C):
    how well a denoiser puts the shape where the noisy input has it, frame by frame."""
    return float(np.mean([np.linalg.norm(frame_centroids(a) - frame_centroids(b), axis=-1).mean()
                          for a, b in zip(x0_hat, x0)]))


@jax.jit
def ideal_velocity(references, x, t, cond=None):
    """The velocity of the ideal denoiser for a data set of clean latents ``references`` (N, T, h, w, C), in the
    sampler's ``model_fn(params, x, t, cond)`` form with the references as ``params`` (one function, so it compiles
    once per shape whatever the prompt). For ``x_σ = (1 − σ)·x0 + σ·ε`` with ``x0`` drawn from the references,
    ``p(x0_i | x_σ) ∝ exp(−‖x_σ − (1 − σ)·x0_i‖² / 2σ²)``; ``x0̂`` is that posterior's mean and ``v = (x_σ − x0̂)/σ``
    (since ``v = ε − x0``). ``cond`` is ignored: it only knows the one prompt's clips."""
    sigma = jnp.maximum(jnp.broadcast_to(jnp.asarray(t, jnp.float32).reshape(-1), (x.shape[0],)) / 1000.0, 1e-4)
    distance = jnp.sum(jnp.square(x[:, None] - (1.0 - sigma)[:, None, None, None, None, None] * references[None]),
                       axis=(2, 3, 4, 5))
    weights = jax.nn.softmax(-distance / (2.0 * sigma[:, None] ** 2), axis=1)
    x0_hat = jnp.einsum("bn,nthwc->bthwc", weights, references)
    return (x - x0_hat) / sigma[:, None, None, None, None]


def render_latents(pipe, triple, *, paths: str, count: int, seed: int, background: str | None = None) -> np.ndarray:
    """``count`` clips of exactly ``triple`` (colour, shape, direction), encoded: (count, T', h, w, C); on random
    backgrounds, or all on ``background`` (what the recipe's unnamed background asks for)."""
    from sana_jax.demo import models, shapes

    rng = np.random.default_rng(seed)
    videos = [shapes.render(shapes.random_clip(rng, triple, models.SIZE, models.FRAMES, background=background,
                                               paths=paths), models.SIZE, models.FRAMES) for _ in range(count)]
    return np.asarray(pipe.encode_video(np.stack(videos).astype(np.float32) / 127.5 - 1.0))


def sample_with_ideal_denoiser(pipe, triple, references, *, seed: int,
                               handover: float = 0.0) -> tuple[str | None, str | None]:
    """Generate the prompt's video with the pipeline's sampler, decoder and defaults, but the ideal denoiser of
    ``references`` in place of the DiT while σ > ``handover``; returns what :func:`shapes.measure` reads from it.

    ``handover = 0``: the ideal denoiser throughout, without guidance (it has no unconditional branch). Otherwise the
    DiT takes over below ``handover`` with the pipeline's guidance (above it both guidance halves get the same ideal
    velocity, so guidance changes nothing there). The highest handover that still gives the prompted video is the
    noise level below which the DiT keeps a layout it is handed."""
    from sana_jax.demo import shapes

    dit = pipe._model_fn, pipe.dit_params
    references = jnp.asarray(references, jnp.float32)
    if handover > 0.0:
        pipe._model_fn, pipe.dit_params = _handover_fn(dit[0]), (dit[1], references, jnp.float32(handover))
        options = {}
    else:
        pipe._model_fn, pipe.dit_params = ideal_velocity, references
        options = {"guidance_scale": 1.0}
    try:
        frames = pipe(shapes.caption(*triple), seed=seed, progress=False, **options).frames[0]
    finally:
        pipe._model_fn, pipe.dit_params = dit
    return shapes.measure(frames)


@functools.lru_cache(maxsize=4)
def _handover_fn(dit_fn):
    """A sampler ``model_fn`` over params ``(dit_params, references, handover)``: ideal above σ = handover, the DiT
    below (one object per DiT function, so the sampling loop compiles once)."""
    def model_fn(params, x, t, cond):
        dit_params, references, handover = params
        sigma = jnp.asarray(t, jnp.float32).reshape(-1)[0] / 1000.0
        return jax.lax.cond(sigma > handover, lambda: ideal_velocity(references, x, t).astype(x.dtype),
                            lambda: dit_fn(dit_params, x, t, cond))
    return model_fn


def jitted_velocity(pipe):
    """The pipeline's DiT as one compiled function of (latents, text, timestep, mask): every σ and prompt reuses it."""
    from flax import nnx

    graph, params = nnx.split(pipe.transformer)
    forward = jax.jit(lambda p, x, text, t, mask: nnx.merge(graph, p)(x, text, t, mask))
    return lambda x, text, t, mask: forward(params, x, text, t, mask)


def measure_prompt(pipe, velocity, triple, *, paths: str, clips: int, evaluate: int, seed: int) -> dict:
    from sana_jax.demo import shapes

    x0 = render_latents(pipe, triple, paths=paths, count=clips, seed=seed)
    x0, others = x0[:evaluate], x0[evaluate:]  # the references come from clips the error is not measured on
    references = jnp.asarray(others, jnp.float32)
    cond, _ = pipe.encode_prompt([shapes.caption(*triple)] * evaluate, None)
    noise = np.asarray(jax.random.normal(jax.random.key(seed), x0.shape))
    target = noise - x0
    errors, ideal_errors, located, ideal_located, x0_hat = {}, {}, {}, {}, None
    for sigma in SIGMAS:
        x_t = (1.0 - sigma) * x0 + sigma * noise
        v = np.asarray(velocity(jnp.asarray(x_t), cond["text"], jnp.full((evaluate,), sigma * 1000.0), cond["mask"]))
        errors[f"{sigma:g}"] = float(np.mean(np.square(v - target)))
        v_ideal = np.asarray(ideal_velocity(references, jnp.asarray(x_t), jnp.float32(sigma * 1000.0)))
        ideal_errors[f"{sigma:g}"] = float(np.mean(np.square(v_ideal - target)))
        located[f"{sigma:g}"] = localisation_error(x_t - sigma * v, x0)
        ideal_located[f"{sigma:g}"] = localisation_error(x_t - sigma * v_ideal, x0)
        if sigma == 1.0:
            x0_hat = (x_t - sigma * v).mean(0)

    def prior_error(mean):
        return float(np.mean(np.square(x0 - mean)))  # at σ = 1: v = ε − mean, error = x0 − mean

    frame_mean = others.mean(axis=(0, 2, 3), keepdims=True)[0]
    direction = shapes.DIRECTIONS[triple[2]]
    return {"prompt": shapes.caption(*triple), "model": errors, "ideal_denoiser": ideal_errors,
            "localisation_cells": {"model": located, "ideal_denoiser": ideal_located},
            "sigma_1_references": {"zero": prior_error(0.0), "frame_mean": prior_error(frame_mean),
                                   "conditional_mean": prior_error(others.mean(0))},
            "travel_cells": {"model_sigma_1": centroid_travel(x0_hat, direction),
                             "clips_mean": centroid_travel(others.mean(0), direction)}}


def main() -> None:
    from sana_jax.demo import default_model_path, shapes
    from sana_jax.pipelines import SanaVideoPipeline

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(default_model_path()), help="pipeline folder (default: shipped)")
    parser.add_argument("--paths", choices=shapes.PATHS, default="anywhere", help="the clips' paths (as trained)")
    parser.add_argument("--clips", type=int, default=264, help="clips per prompt (evaluated + reference)")
    parser.add_argument("--evaluate", type=int, default=8, help="clips per prompt the error is measured on")
    parser.add_argument("--sample", action="store_true",
                        help="also generate each prompt's video with the ideal denoiser in place of the DiT")
    parser.add_argument("--handover", type=float, nargs="*", default=[], metavar="S",
                        help="also generate with the ideal denoiser above σ = S and the DiT below, for each S")
    parser.add_argument("--name", default="default_model_sigma_cpu", help="results file name")
    args = parser.parse_args()

    pipe = SanaVideoPipeline.from_pretrained(args.model)
    velocity = jitted_velocity(pipe)
    rows = [measure_prompt(pipe, velocity, triple, paths=args.paths, clips=args.clips, evaluate=args.evaluate, seed=i)
            for i, triple in enumerate(shapes.HELD_OUT)]

    def average(get):
        return float(np.mean([get(r) for r in rows]))

    summary = {"model": {s: average(lambda r, s=s: r["model"][s]) for s in rows[0]["model"]},
               "ideal_denoiser": {s: average(lambda r, s=s: r["ideal_denoiser"][s]) for s in rows[0]["model"]},
               "sigma_1_references": {k: average(lambda r, k=k: r["sigma_1_references"][k])
                                      for k in rows[0]["sigma_1_references"]},
               "travel_cells": {k: average(lambda r, k=k: r["travel_cells"][k]) for k in rows[0]["travel_cells"]},
               "localisation_cells": {who: {s: average(lambda r, s=s, who=who: r["localisation_cells"][who][s])
                                            for s in rows[0]["model"]} for who in ("model", "ideal_denoiser")}}
    print("velocity error by σ:", {k: round(v, 3) for k, v in summary["model"].items()})
    print("ideal denoiser by σ:", {k: round(v, 3) for k, v in summary["ideal_denoiser"].items()})
    for who, by_sigma in summary["localisation_cells"].items():
        print(f"{who}: per-frame shape position error (latent cells) by σ:",
              {k: round(v, 2) for k, v in by_sigma.items()})
    if args.sample or args.handover:
        handovers = ([0.0] if args.sample else []) + args.handover
        for i, (row, triple) in enumerate(zip(rows, shapes.HELD_OUT)):
            references = render_latents(pipe, triple, paths=args.paths, count=args.clips - args.evaluate, seed=1000 + i)
            for handover in handovers:
                colour, direction = sample_with_ideal_denoiser(pipe, triple, references, seed=i, handover=handover)
                row.setdefault("ideal_denoiser_sampled", {})[f"{handover:g}"] = {
                    "colour": colour, "direction": direction, "right": (colour, direction) == (triple[0], triple[2])}
        summary["ideal_denoiser_sampled_right"] = {
            f"{h:g}": sum(r["ideal_denoiser_sampled"][f"{h:g}"]["right"] for r in rows) / len(rows) for h in handovers}
        print("colour and direction right with the ideal denoiser above σ (0: throughout) and the DiT below:",
              {k: f"{v:.0%}" for k, v in summary["ideal_denoiser_sampled_right"].items()})
    print("σ = 1 references:", {k: round(v, 3) for k, v in summary["sigma_1_references"].items()})
    print("travel along the prompt's direction (latent cells):",
          {k: round(v, 2) for k, v in summary["travel_cells"].items()})
    result = {"device": device_description(), "model": args.model, "paths": args.paths, "clips": args.clips,
              "evaluate": args.evaluate, "summary": summary, "prompts": rows}
    print("wrote", write_result(args.name, result, RESULTS))


if __name__ == "__main__":
    main()

"""Does a demo DiT denoise at every noise level, and are its videos clean?

    python experiments/default_model/denoising.py                                   # the shipped default model
    python experiments/default_model/denoising.py --model run/ --name denoising_run

For 8 rendered clips of training captions (black background, ``--paths``), each noise level σ: the clean latents
``z`` noised to ``x = (1 − σ)·z + σ·ε``, the DiT's prediction ``x0̂ = x − σ·v̂``, and the median over latent cells of
``|x0̂ − z|`` (16 channels: a prediction that keeps the noise of its input, ``x0̂ ≈ z + σ·ε``, reads 4σ). Then the
16 held-out prompts generated with the folder's defaults: colour and direction (``shapes.measure``) and the
background cleanliness (``shapes.background_cleanliness`` against black: the share of background pixels within 30
levels, per frame; its mean and its worst frame).

This is how the cause of the first default model's noisy videos was found (docs/default-model.md): its x0̂ kept the
noise of its input below σ ≈ 0.8 (4.1σ at σ ≤ 0.2), so the ODE sampler ended with that noise in the latents.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import device_description, write_result  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SIGMAS = (0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0)


def x0_error_by_sigma(pipe, paths: str, seed: int = 1) -> dict[str, float]:
    from sana_jax.demo import shapes

    rng = np.random.default_rng(seed)
    triples = [shapes.TRAIN_TRIPLES[i] for i in rng.integers(len(shapes.TRAIN_TRIPLES), size=8)]
    clips = [shapes.random_clip(rng, t, 64, 9, background="black", paths=paths) for t in triples]
    video = np.stack([shapes.render(c, 64, 9) for c in clips]).astype(np.float32) / 127.5 - 1.0
    z = pipe.encode_video(video)
    cond, _ = pipe.encode_prompt([c.caption(False) for c in clips], None)
    eps = jax.random.normal(jax.random.key(0), z.shape)
    out = {}
    for s in SIGMAS:
        x = (1 - s) * z + s * eps
        v = pipe._model_fn(pipe.dit_params, x, jnp.full((len(clips),), s * 1000.0), cond)
        out[str(s)] = float(np.median(np.linalg.norm(np.asarray(x - s * v - z), axis=-1)))
    return out


def main() -> None:
    from sana_jax.demo import default_model_path, recipe, shapes
    from sana_jax.pipelines import SanaVideoPipeline

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=default_model_path(), help="demo pipeline folder")
    parser.add_argument("--paths", default="lane", help="paths of the clips the x0 error is measured on")
    parser.add_argument("--name", default="denoising", help="result name (results/NAME_cpu.json)")
    args = parser.parse_args()

    pipe = SanaVideoPipeline.from_pretrained(args.model)
    errors = x0_error_by_sigma(pipe, args.paths)
    quality = recipe.evaluate(pipe, shapes.held_out_prompts(), seed=0, wrap=args.paths == "wrap")
    frames = pipe(shapes.held_out_prompts(), seed=0, progress=False).frames
    clean = np.stack([shapes.background_cleanliness(v, shapes.BACKGROUNDS["black"]) for v in frames])
    result = {"device": device_description(), "model": str(args.model), "paths": args.paths,
              "x0_error_median_per_cell_by_sigma": errors,
              "held_out": {k: quality[k] for k in ("score", "colour", "direction")},
              "cleanliness_mean": float(clean.mean()), "cleanliness_worst_frame": float(clean.min())}
    print(result)
    print("wrote", write_result(f"{args.name}_cpu", result, RESULTS))


if __name__ == "__main__":
    main()

"""``sana-jax train demo``: how the embedded default model is made, from nothing, on a CPU.

1. Render the procedural clips (:mod:`sana_jax.demo.shapes`, seeded).
2. Train the :class:`~sana_jax.vae.patch.PatchVAE` on them (reconstruction + a small KL term, optax Adam), then
   measure its per-channel latent mean/std (the normalisation the pipeline applies).
3. Write a pipeline folder (the VAE, a randomly initialised Gemma-2-architecture text encoder that stays frozen
   — a fixed random feature map of the words, which the DiT learns to read — the word-level tokenizer, a fresh
   SANA-Video DiT, the scheduler) and load it as a :class:`~sana_jax.pipelines.SanaVideoPipeline`.
4. Cache latents and caption embeddings through that pipeline (:func:`sana_jax.training.build_cache`) and train
   the DiT with :class:`sana_jax.training.Trainer` (flow matching, text dropout for guidance, EMA).
5. Export the EMA weights in the diffusers layout into the folder.

The DiT is preconditioned (:class:`sana_jax.models.preconditioning.PreconditionedTransformer`, ``noise_scale``), trained
on clips whose paths the prompt fixes (``paths="lane"``) and whose background is black unless the caption names one,
with noise levels drawn uniformly and a quarter of them at σ = 1, where sampling lays the video out.

``sana_jax/default_model`` was made by this code in three runs: the first with these defaults (reusing the VAE of
the earlier default model, ``vae_from``), the second continuing its DiT for 1,100 more steps (``dit_from``,
``dit_steps=1100``), the third continuing that as an x0 predictor (``target="x0"``, ``flow_shift=1``,
``dit_steps=600``, ``dit_batch=16``). Its ``recipe.json`` records the runs' settings, times and the demo-quality
score.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import converters
from converters.safetensors_io import save_safetensors
from sana_jax.demo import models, shapes
from sana_jax.errors import InputError
from sana_jax.io.files import atomic_directory

DEFAULTS = {"clips": 3000, "vae_steps": 600, "vae_batch": 16, "dit_steps": 1000, "dit_batch": 32,
            "learning_rate": 1e-3, "ema_decay": 0.99, "seed": 0, "vae_from": None, "dit_from": None,
            "paths": "lane", "timestep_sampling": "uniform", "pure_noise_fraction": 0.25,
            "noise_scale": 0.1, "target": "edm", "unnamed_background": "black", "flow_shift": 3.0}


def render_clips(count: int, seed: int, paths: str = "anywhere", background: str | None = None,
                 unnamed_background: str | None = None) -> tuple[np.ndarray, list[str]]:
    """The recipe's clips, uint8 (count, T, H, W, 3), and captions (:func:`sana_jax.demo.shapes.dataset`)."""
    frames, captions = [], []
    for video, caption in shapes.dataset(count, size=models.SIZE, frames=models.FRAMES, seed=seed, paths=paths,
                                         background=background, unnamed_background=unnamed_background):
        frames.append(video)
        captions.append(caption)
    return np.stack(frames), captions


def train_vae(frames: np.ndarray, *, steps: int, batch: int, seed: int, kl_weight: float = 1e-4,
              learning_rate: float = 1e-3, foreground_weight: float = 10.0, log=print):
    """Train the PatchVAE on uint8 clips (N, T, H, W, 3); returns it with its latent statistics in the config.

    The reconstruction error is weighted ``1 + foreground_weight`` on pixels that differ from the clip's background
    (the median colour of its top and bottom rows): the moving shape covers ~5 % of the pixels, and unweighted the
    autoencoder learns the background first and blurs the shape away."""
    from sana_jax.vae.patch import PatchVAE

    vae = PatchVAE(models.vae_config(), rngs=nnx.Rngs(seed))
    graphdef, params = nnx.split(vae)
    tx = optax.adam(optax.cosine_decay_schedule(learning_rate, steps, 0.05))
    opt_state = tx.init(params)

    def loss_fn(p, x, key):
        model = nnx.merge(graphdef, p)
        mean, logvar = model.posterior(x)
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
        border = jnp.concatenate([x[:, :, 0], x[:, :, -1]], axis=2).reshape(x.shape[0], -1, 3)
        background = jnp.median(border, axis=1)[:, None, None, None]
        weight = 1.0 + foreground_weight * (jnp.linalg.norm(x - background, axis=-1, keepdims=True) > 0.2)
        error = jnp.square(model.decode(z, normalized=False) - x)
        rec = jnp.sum(weight * error) / (jnp.sum(weight) * x.shape[-1])
        kl = 0.5 * jnp.mean(jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)
        return rec + kl_weight * kl, rec

    @jax.jit
    def step(p, o, x, key):
        (_, rec), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, x, key)
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), o, rec

    rng = np.random.default_rng(seed)
    for i in range(steps):
        x = frames[rng.integers(len(frames), size=batch)].astype(np.float32) / 127.5 - 1.0
        params, opt_state, rec = step(params, opt_state, x, jax.random.key(i))
        if (i + 1) % 100 == 0 or i + 1 == steps:
            log(f"vae step {i + 1}/{steps}: reconstruction mse {float(rec):.4f}")
    vae = nnx.merge(graphdef, params)
    encode = jax.jit(lambda x: vae.encode(x, normalized=False))
    mus = np.concatenate([np.asarray(encode(frames[i:i + 64].astype(np.float32) / 127.5 - 1.0))
                          for i in range(0, min(len(frames), 512), 64)])
    flat = mus.reshape(-1, mus.shape[-1])
    stats = {"latents_mean": flat.mean(0).tolist(), "latents_std": (flat.std(0) + 1e-6).tolist()}
    trained = PatchVAE(models.vae_config(**stats), rngs=nnx.Rngs(0))
    nnx.update(trained, nnx.state(vae))
    return trained


def write_component(folder: Path, model, weights_name: str = "diffusion_pytorch_model.safetensors") -> None:
    """``config.json`` + safetensors in the converters' layout for ``model`` (any supported family)."""
    family = converters.loader._family_of(model)
    folder.mkdir(parents=True, exist_ok=True)
    save_safetensors(family.export(model), folder / weights_name, metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(model.config.to_diffusers(), indent=2))


def write_pipeline_folder(folder: Path, transformer, vae, text_encoder) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_component(folder / "transformer", transformer)
    write_component(folder / "vae", vae)
    write_component(folder / "text_encoder", text_encoder, "model.safetensors")
    models.write_tokenizer(folder / "tokenizer")
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(models.SCHEDULER, indent=2))
    (folder / "model_index.json").write_text(json.dumps(models.model_index(), indent=2))
    return folder


def evaluate(pipe, prompts: list[str], *, seed: int = 0, batch: int = 8, wrap: bool = False) -> dict:
    """Generate one video per prompt and score colour and direction with :func:`shapes.measure` (``wrap``: of the
    torus world, ``paths="wrap"``)."""
    results = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start:start + batch]
        out = pipe(chunk, seed=seed + start, progress=False)
        for prompt, video in zip(chunk, out.frames):
            want = shapes.parse_prompt(prompt)
            got = shapes.measure(video, wrap=wrap)
            results.append({"prompt": prompt, "colour": got[0], "direction": got[1],
                            "colour_ok": got[0] == want[0], "direction_ok": got[1] == want[1]})
    both = sum(r["colour_ok"] and r["direction_ok"] for r in results)
    return {"score": both / len(results), "colour": sum(r["colour_ok"] for r in results) / len(results),
            "direction": sum(r["direction_ok"] for r in results) / len(results), "videos": results}


def starting_models(seed: int, dit_from: str | Path | None = None,
                    noise_scale: float | None = DEFAULTS["noise_scale"], target: str = DEFAULTS["target"]):
    """``(transformer, text_encoder)`` the DiT training starts from: freshly initialised (``nnx.Rngs(seed + 1)``),
    or, with ``dit_from``, those of a pipeline folder written by an earlier run of this recipe (the DiT has learnt to
    read that text encoder), so that a run can continue another on other data. ``noise_scale`` and ``target``: the
    DiT's preconditioning (:func:`models.transformer_config`); a ``dit_from`` folder must share its noise scale,
    and its weights are taken into the requested ``target`` (an "edm" DiT can be continued as an "x0" one: the
    network is the same, only what its output means changes). A folder that is not such a pipeline is refused
    here, before any rendering or training."""
    from sana_jax.models.gemma import Gemma
    from sana_jax.models.preconditioning import PreconditionedConfig, build_transformer

    config = models.transformer_config(noise_scale, target)
    if dit_from is None:
        rngs = nnx.Rngs(seed + 1)
        text_encoder = Gemma(models.text_encoder_config(), rngs=rngs)
        return build_transformer(config, rngs=rngs), text_encoder
    start = Path(dit_from)
    if not (start / "transformer").is_dir() or not (start / "text_encoder").is_dir():
        raise InputError(f"dit_from {start} is not a demo pipeline folder (it needs transformer/ and text_encoder/)")
    transformer, text_encoder = converters.load(start / "transformer"), converters.load(start / "text_encoder")
    if isinstance(transformer.config, PreconditionedConfig) and isinstance(config, PreconditionedConfig):
        as_requested = dataclasses.replace(transformer.config.preconditioning,
                                           target=config.preconditioning.target)
        if as_requested != transformer.config.preconditioning:
            graphdef = nnx.graphdef(nnx.eval_shape(lambda: build_transformer(
                dataclasses.replace(transformer.config, preconditioning=as_requested), rngs=nnx.Rngs(0))))
            transformer = nnx.merge(graphdef, nnx.state(transformer))  # the same weights, read as requested
    if transformer.config != config or text_encoder.config != models.text_encoder_config():
        raise InputError(f"dit_from {start}: its DiT or text encoder is not the demo's configuration (with "
                         f"preconditioning {getattr(config, 'preconditioning', None)})")
    return transformer, text_encoder


def untrained_pipeline(work: Path, vae, frames: np.ndarray, captions: list[str], *, seed: int, progress: bool = False,
                       start: tuple | None = None):
    """The recipe's starting point: a pipeline folder under ``work`` with the DiT and text encoder ``start``
    (default: :func:`starting_models` of ``seed``) beside ``vae``, and the latent/text cache of the clips.
    Returns ``(pipe, dataset)``. Several processes: process 0 writes the folder, every process reads it, and the
    clips' batches are encoded spread over the processes (:func:`sana_jax.training.build_cache`)."""
    from sana_jax.commands.hosts import one_writer
    from sana_jax.pipelines import SanaVideoPipeline
    from sana_jax.training import build_cache

    transformer, text_encoder = start if start is not None else starting_models(seed)
    with one_writer() as writer:
        if writer:
            write_pipeline_folder(work / "pipeline", transformer, vae, text_encoder)
    pipe = SanaVideoPipeline.from_pretrained(work / "pipeline")
    dataset = build_cache(pipe, list(zip(frames, captions)), batch_size=64, progress=progress,
                          meta={"source": "sana_jax.demo.shapes", "seed": seed})
    return pipe, dataset


def make_default_model(out: str | Path, *, work: str | Path | None = None, progress: bool = True, log=print,
                       overwrite: bool = False, mesh=None, **overrides) -> dict:
    """Run the whole recipe; ``out`` becomes a pipeline folder like ``sana_jax/default_model``. Returns the record
    written to ``out/recipe.json``. ``mesh``: train the DiT on it (:class:`sana_jax.training.Trainer`).

    Several processes (a mesh over several hosts) all run the recipe: each renders the same clips and trains the
    same small VAE (a few seconds), the cache's batches are spread over them and the DiT trains on the mesh; process
    0 alone logs, writes ``out`` and scores it (the others return the record without the score)."""
    from sana_jax.commands.hosts import one_writer
    from sana_jax.parallel.multihost import is_writer
    from sana_jax.pipelines import SanaVideoPipeline
    from sana_jax.training import TrainConfig, Trainer

    args = {**DEFAULTS, **overrides}
    unknown = set(args) - set(DEFAULTS)
    if unknown:
        raise InputError(f"unknown demo settings {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    shapes.check_background(args["unnamed_background"], "unnamed_background")  # the dataset checks only when drawn
    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"{out} exists; choose another --out or pass --overwrite")
    work = Path(work) if work is not None else out.with_name(out.name + ".work")
    times, seed = {}, args["seed"]
    log = log if is_writer() else (lambda *_, **__: None)
    progress = progress and is_writer()
    # built first so that a bad setting (an EMA decay of 1.5, a negative fraction) is refused before any work
    config = TrainConfig(learning_rate=args["learning_rate"], warmup_steps=min(100, args["dit_steps"] // 10),
                         lr_schedule="cosine", timestep_sampling=args["timestep_sampling"],
                         pure_noise_fraction=args["pure_noise_fraction"],
                         total_steps=args["dit_steps"], ema_decay=args["ema_decay"], text_dropout=0.1,
                         flow_shift=args["flow_shift"],
                         batch_size=args["dit_batch"], seed=seed)
    start_models = starting_models(seed, args["dit_from"], args["noise_scale"], args["target"])
    start = time.perf_counter()
    frames, captions = render_clips(args["clips"], seed, args["paths"],
                                    unnamed_background=args["unnamed_background"])
    times["render_s"] = time.perf_counter() - start
    log(f"rendered {len(frames)} clips in {times['render_s']:.0f} s")

    start = time.perf_counter()
    if args["vae_from"]:  # a PatchVAE folder trained by an earlier run of this recipe (it does not depend on frames)
        vae = converters.load(args["vae_from"])
        log(f"reusing the VAE of {args['vae_from']}")
    else:
        vae = train_vae(frames, steps=args["vae_steps"], batch=args["vae_batch"], seed=seed, log=log)
    times["vae_s"] = time.perf_counter() - start

    start = time.perf_counter()
    pipe, dataset = untrained_pipeline(work, vae, frames, captions, seed=seed, progress=progress,
                                       start=start_models)
    times["cache_s"] = time.perf_counter() - start
    log(f"cached {dataset.size} clips, {len(dataset.captions)} distinct captions in {times['cache_s']:.0f} s")

    trainer = Trainer(pipe.transformer, config, mesh=mesh)
    start = time.perf_counter()
    state = trainer.fit(dataset, args["dit_steps"], run_dir=work / "run", save_every=250, log_every=50,
                        progress=progress, on_metrics=lambda s, m: log(f"dit step {s}: loss {m['loss']:.4f}")
                        if s % 250 == 0 else None)
    times["dit_s"] = time.perf_counter() - start

    final = trainer.model_from(state, ema=True)  # gathered on every process
    record = {"settings": args, "times": times}
    with one_writer() as writer:
        if writer:
            with atomic_directory(out, overwrite=overwrite, error=InputError) as tmp:
                write_pipeline_folder(tmp, final, pipe.vae, pipe.text_encoder)
                start = time.perf_counter()
                quality = evaluate(SanaVideoPipeline.from_pretrained(tmp), shapes.held_out_prompts(), seed=seed,
                                   wrap=args["paths"] == "wrap")
                times["evaluate_s"] = time.perf_counter() - start
                record.update(quality_on_held_out=quality, device=jax.devices()[0].device_kind, jax=jax.__version__)
                (tmp / "recipe.json").write_text(json.dumps(record, indent=2))
            log(f"wrote {out}: held-out colour+direction score {quality['score']:.0%}")
    return record

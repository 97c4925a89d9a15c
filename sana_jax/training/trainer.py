"""A flow-matching trainer for the SANA-Video DiT: optax AdamW with warm-up, gradient clipping, EMA, bf16 compute
over float32 master weights, block rematerialisation, data/FSDP sharding, and orbax checkpoints that resume exactly.

The training state is one pytree of plain dicts (names are the model's parameter paths, ``"blocks.attn1.to_q.kernel"``):

* ``params``  — the trainable parameters, float32 (the master copy; the forward casts to ``compute_dtype``);
* ``frozen``  — the other parameters (``TrainConfig.trainable`` chooses, by regular expression);
* ``opt_state`` (optax), ``ema`` (or an empty dict), ``step`` (int32).

Everything random is a function of ``(seed, step)``: the noise and σ of a step come from
``fold_in(key(seed), step)`` and the batch from :meth:`LatentDataset.batch` with the same step. Resuming from a
checkpoint therefore continues bit-for-bit as the uninterrupted run would (on CPU, where XLA is deterministic).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from sana_jax.errors import ConfigError, InputError
from sana_jax.kernels.dispatch import on_mesh
from sana_jax.parallel.multihost import is_writer
from sana_jax.progress import progress_bar
from sana_jax.training.checkpoints import RunDirectory
from sana_jax.training.config import TrainConfig
from sana_jax.training.flow import flow_matching_loss, model_loss_weight
from sana_jax.training.guard import DivergenceGuard
from sana_jax.training.params import ParamTree, gathered, place_batch, set_compute, state_shardings


def learning_rate_schedule(cfg: TrainConfig) -> optax.Schedule:
    """Linear warm-up from 0 to ``learning_rate``, then constant or cosine decay."""
    if cfg.lr_schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, max(cfg.warmup_steps, 1), cfg.total_steps)
    if cfg.warmup_steps == 0:
        return optax.constant_schedule(cfg.learning_rate)
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.learning_rate, cfg.warmup_steps),
                                 optax.constant_schedule(cfg.learning_rate)], [cfg.warmup_steps])


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    parts = [optax.clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip else []
    parts.append(optax.adamw(learning_rate_schedule(cfg), b1=cfg.adam_b1, b2=cfg.adam_b2,
                             weight_decay=cfg.weight_decay))
    return optax.chain(*parts)


class Trainer:
    """Trains a model whose call is ``model(latents, text, timestep, text_mask)`` (SANA-Video DiT).

    ``Trainer(model, config).fit(dataset, steps, run_dir=...)``; ``model`` is only read (its structure and
    initial weights). ``mesh`` (``sana_jax.parallel.make_mesh``) shards parameters and optimiser state by the
    FSDP logical-axis rules and the batch over the ``data`` and ``fsdp`` axes.
    """

    def __init__(self, model: nnx.Module, config: TrainConfig, *, mesh=None):
        self.config, self.mesh = config, mesh
        self.tree = ParamTree(model, config.compute_dtype, config.remat, mesh=mesh)
        self.model_config, self.names = self.tree.model_config, self.tree.names
        pattern = re.compile(config.trainable) if config.trainable else None
        self.trainable = [n for n in self.names if pattern is None or pattern.search(n)]
        if not self.trainable:
            raise ConfigError(f"trainable={config.trainable!r} matches no parameter (names look like "
                              f"{self.names[0]!r})")
        self.tx = make_optimizer(config)
        self.schedule = learning_rate_schedule(config)
        self.frozen_names = [n for n in self.names if n not in set(self.trainable)]
        # on a mesh: every leaf of the state keeps one sharding (fresh, stepped or restored alike)
        self.shardings = None if mesh is None else state_shardings(
            mesh, jax.eval_shape(self._build_state, *self._weights(abstract=True)),
            dict.fromkeys(("params", "frozen", "opt_state", "ema"), self.tree))
        # on a mesh the linear-attention kernel (GPU) runs sharded (sana_jax.kernels.sharded)
        self._step = jax.jit(on_mesh(self._train_step, mesh), donate_argnums=(0,),
                             **step_placement(mesh, self.shardings))

    # -- state -------------------------------------------------------------------------------------------------

    def _weights(self, abstract: bool = False) -> tuple[dict, dict]:
        """(trainable weights as float32 master copies, the rest as given): placed copies, or their shapes."""
        make = self.tree.abstract if abstract else self.tree.initial_copy
        return make(self.trainable, jnp.float32), make(self.frozen_names)

    def _build_state(self, params: dict, frozen: dict) -> dict:
        ema = jax.tree.map(jnp.copy, params) if self.config.ema_decay else {}
        return {"step": jnp.zeros((), jnp.int32), "params": params, "frozen": frozen,
                "opt_state": self.tx.init(params), "ema": ema}

    def init_state(self) -> dict:
        """Step 0: trainable weights as float32 master copies, the rest as given, fresh optimiser and EMA."""
        return jax.jit(self._build_state, donate_argnums=(0, 1), **state_placement(self.shardings))(*self._weights())

    def abstract_state(self) -> dict:
        """The state's shapes, dtypes and (on a mesh) shardings: what a checkpoint restores into."""
        return abstract_state(self._build_state, self._weights(abstract=True), self.shardings)

    def run_signature(self, dataset) -> dict:
        """What must not change between a run and its resumption (``run.json``). ``total_steps`` counts only for
        the cosine schedule (which decays to 0 there): otherwise a finished run continues to a larger one."""
        train = self.config.to_dict()
        if self.config.lr_schedule != "cosine":
            del train["total_steps"]
        return {"train": train, "model": self.model_config, "parameters": describe(self),
                "data": dataset.signature()}

    def phase(self, step: int) -> str:
        """What step ``step`` (0-based) trains, for messages: "warm-up" or "training"."""
        return "warm-up" if step < self.config.warmup_steps else "training"

    def model_from(self, state: dict, *, ema: bool = True, dtype="float32") -> nnx.Module:
        """The model with the state's weights (the EMA weights when kept and ``ema``), computing in ``dtype``."""
        weights = state["ema"] if (ema and state["ema"]) else state["params"]
        model = self.tree.merge(gathered(weights), gathered(state["frozen"]))  # every process gets every weight
        set_compute(model, dtype, remat=False)
        return model

    # -- one step ----------------------------------------------------------------------------------------------

    def loss(self, params: dict, frozen: dict, batch: dict, key: jax.Array) -> jax.Array:
        cfg = self.config
        model = self.tree.merge(params, frozen)
        return flow_matching_loss(model, batch["latents"], batch["text"], batch["mask"], key,
                                  shift=cfg.flow_shift, sampling=cfg.timestep_sampling,
                                  pure_noise_fraction=cfg.pure_noise_fraction,
                                  null_text=batch.get("null_text"), null_mask=batch.get("null_mask"),
                                  text_dropout=cfg.text_dropout, loss_weight=model_loss_weight(model))

    def _train_step(self, state: dict, batch: dict):
        key = jax.random.fold_in(jax.random.key(self.config.seed), state["step"])
        loss, grads = jax.value_and_grad(self.loss)(state["params"], state["frozen"], batch, key)
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        ema = ema_update(state["ema"], params, self.config.ema_decay)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": self.schedule(state["step"])}
        return {"step": state["step"] + 1, "params": params, "frozen": state["frozen"], "opt_state": opt_state,
                "ema": ema}, metrics

    def _place_batch(self, batch: dict) -> dict:
        return place_batch(self.mesh, batch, replicated=("null_text", "null_mask"))

    def step(self, state: dict, batch: dict, index: int | None = None) -> tuple[dict, dict]:
        """One optimiser step (``state`` is donated: use the returned one); ``index``, the state's step as the
        caller counts it, is not needed here (the distiller's phase depends on it)."""
        return self._step(state, self._place_batch(batch))

    # -- the loop ----------------------------------------------------------------------------------------------

    def fit(self, dataset, steps: int, **options) -> dict:
        """Train until ``steps`` optimiser steps are done and return the state (:func:`fit`'s options)."""
        return fit(self, dataset, steps, **options)


def state_placement(shardings) -> dict:
    """``jax.jit`` options that put a built state on ``shardings`` (none without a mesh)."""
    return {} if shardings is None else {"out_shardings": shardings}


def step_placement(mesh, shardings) -> dict:
    """``jax.jit`` options for a step ``(state, batch…) -> (state, metrics)``: the state keeps ``shardings``, the
    metrics are replicated (every process reads them)."""
    if mesh is None:
        return {}
    from jax.sharding import NamedSharding, PartitionSpec

    return {"out_shardings": (shardings, NamedSharding(mesh, PartitionSpec()))}


def abstract_state(build, weights: tuple, shardings) -> dict:
    """``jax.eval_shape`` of ``build(*weights)`` with each leaf's sharding (on a mesh): orbax restores a checkpoint
    onto them, each process reading its own shards."""
    shapes = jax.eval_shape(build, *weights)
    if shardings is None:
        return shapes
    return jax.tree.map(lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes,
                        shardings)


def ema_update(ema: dict, params: dict, decay: float | None) -> dict:
    """``decay·ema + (1 − decay)·params`` leaf by leaf (``ema`` unchanged, e.g. empty, when ``decay`` is None)."""
    if not decay:
        return ema
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def fit(trainer, dataset, steps: int, *, run_dir: str | Path | None = None, save_every: int = 500,
        keep: int = 3, log_every: int = 10, progress: bool = True,
        on_metrics: Callable[[int, dict], None] | None = None, state: dict | None = None) -> dict:
    """The training loop of any trainer with ``init_state``/``abstract_state``/``run_signature(dataset)``/
    ``step(state, batch, index)``/``phase(step)`` and ``config.batch_size``/``config.seed``, over
    ``dataset.batch(step, size, seed)``: train until ``steps`` steps are done and return the state.

    With ``run_dir`` the run is resumable: it holds ``run.json`` (configs, checked on resume), orbax checkpoints
    under ``checkpoints/`` every ``save_every`` steps and at the end (the last ``keep`` kept), and
    ``metrics.jsonl``. Calling ``fit`` again on the same ``run_dir`` continues from the newest complete checkpoint
    that restores (:meth:`RunDirectory.restore_latest`), to a larger ``steps`` too; a checkpoint whose write was
    interrupted is never picked (orbax commits by an atomic rename).

    A NaN or infinite metric (loss, gradient norm) or state ends the run with a NumericsError naming the step and
    its stage (:mod:`sana_jax.training.guard`); nothing non-finite is saved or returned.

    Several processes (a mesh over several hosts) all run this loop: each builds the same batch of a step and keeps
    its shards of it; only process 0 shows progress and writes ``run.json`` and ``metrics.jsonl``, while orbax has
    every process write its shards of each checkpoint (``run_dir`` on a file system they all reach).
    """
    if steps < 1:
        raise InputError(f"steps must be ≥ 1, got {steps}")
    if dataset.size < 1:
        raise InputError("the dataset is empty")
    run = RunDirectory(run_dir, trainer, dataset, keep=keep) if run_dir is not None else None
    bar = None
    try:
        if state is None:
            state = run.restore_latest() if run is not None else None
            state = trainer.init_state() if state is None else state
        start = int(state["step"])
        if start > steps:
            where = f"the run in {run.path}" if run is not None else "the given state"
            raise InputError(f"steps {steps} is below step {start}, where {where} already is: give steps ≥ "
                             f"{start} to continue it")
        guard = DivergenceGuard(trainer.phase, lambda: _kept(run))
        bar = progress_bar(progress and is_writer(), steps, "training", unit="step", initial=start)
        for step in range(start, steps):
            batch = dataset.batch(step, trainer.config.batch_size, seed=trainer.config.seed)
            state, metrics = trainer.step(state, batch, step)  # the host's count: no read-back of state["step"]
            guard.add(step, metrics)
            done = step + 1
            log_now = done % log_every == 0 or done == steps
            save_now = run is not None and (done % save_every == 0 or done == steps)
            if log_now or save_now:
                metrics = guard.check()  # the steps since the last check, fetched in one go
            if log_now:
                if run is not None:
                    run.log(done, metrics)
                if on_metrics is not None:
                    on_metrics(done, metrics)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}")
            if save_now or done == steps:
                guard.check_state(state, done)
            if save_now:
                run.save(done, state)
            bar.update()
    finally:
        if bar is not None:
            bar.close()
        if run is not None:
            run.close()
    return state


def _kept(run: RunDirectory | None) -> str:
    """What a stopped run keeps, for its error."""
    step = run.latest_step() if run is not None else None
    if step is None:
        return "no checkpoint was written" if run is not None else "nothing was saved"
    return f"the last checkpoint, step {step} in {run.path / 'checkpoints'}, is kept"


def describe(trainer: Trainer) -> dict:
    """Counts for logs and ``run.json``."""
    return {"parameters": trainer.tree.count(), "trainable": trainer.tree.count(trainer.trainable),
            "trainable_tensors": len(trainer.trainable), "tensors": len(trainer.names)}

"""A training run's folder: ``run.json`` (what is being trained), ``metrics.jsonl`` and orbax checkpoints.

Checkpoints are written by ``orbax.checkpoint.CheckpointManager`` into ``checkpoints/<step>``: orbax writes into a
temporary folder and renames it when every file is on disk, and only renamed (committed) steps are listed, so a
save that is killed half-way is never taken as the latest. Saves are asynchronous (training goes on while the
previous step is written) and :meth:`RunDirectory.close` waits for the last one.
"""

from __future__ import annotations

import json
from pathlib import Path

import orbax.checkpoint as ocp

from sana_jax.config import read_json
from sana_jax.errors import CheckpointError, ConfigError
from sana_jax.training.config import TrainConfig

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"


class RunDirectory:
    """Checkpoints and logs of one run. Opening an existing run checks that configuration and data match."""

    def __init__(self, path, trainer, dataset, *, keep: int = 3):
        self.path = Path(path).absolute()
        self.trainer = trainer
        self.path.mkdir(parents=True, exist_ok=True)
        signature = trainer.run_signature(dataset)
        run_file = self.path / RUN_FILE
        if run_file.exists():
            previous = read_json(run_file, error=CheckpointError)
            if isinstance(previous.get("train"), dict):  # settings added since the run began count as their default
                previous["train"] = {**_as_json(TrainConfig().to_dict()), **previous["train"]}
            changed = sorted(k for k in signature if previous.get(k) != _as_json(signature[k]))
            if changed:
                raise ConfigError(f"{self.path} holds a run with a different {', '.join(changed)}; resume with the "
                                  "same settings or choose a new --out folder")
        else:
            tmp = run_file.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(signature, indent=2, sort_keys=True))
            tmp.replace(run_file)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=True)
        self.manager = ocp.CheckpointManager(self.path / "checkpoints", options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore_latest(self) -> dict | None:
        """The state of the newest committed checkpoint, or None for a fresh run. Metrics logged after it (by an
        interrupted run) are dropped so that the log matches the resumed run."""
        step = self.latest_step()
        if step is None:
            self._truncate_metrics(0)
            return None
        try:
            state = self.manager.restore(step, args=ocp.args.StandardRestore(self.trainer.abstract_state()))
        except Exception as e:  # orbax raises assorted errors for mismatching trees
            raise CheckpointError(f"{self.path}: cannot restore step {step} ({type(e).__name__}: {e})") from e
        self._truncate_metrics(step)
        return state

    def save(self, step: int, state: dict) -> None:
        self.manager.save(step, args=ocp.args.StandardSave(state))

    def log(self, step: int, metrics: dict) -> None:
        with open(self.path / METRICS_FILE, "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")

    def _truncate_metrics(self, step: int) -> None:
        path = self.path / METRICS_FILE
        if not path.exists():
            return
        lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
        path.write_text("".join(ln + "\n" for ln in lines))

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _as_json(value):
    """``value`` as read back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


def read_metrics(run_dir) -> list[dict]:
    path = Path(run_dir) / METRICS_FILE
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []

"""A training run's folder: ``run.json`` (what is being trained), ``metrics.jsonl`` and orbax checkpoints.

Checkpoints are written by ``orbax.checkpoint.CheckpointManager`` into ``checkpoints/<step>``: orbax writes into a
temporary folder and renames it when every file is on disk, and only renamed (committed) steps are listed, so a
save that is killed half-way is never taken as the latest. Saves are asynchronous (training goes on while the
previous step is written) and :meth:`RunDirectory.close` waits for the last one.

Resuming takes the newest checkpoint that restores (and holds only finite values): a newer one that does not (a
damaged file, a disk that filled up) is named in a warning and moved to ``unreadable_checkpoints/``; when none
restores, a one-line :class:`CheckpointError` says why. Reopening a run checks ``run.json`` against the settings
of the resumed run and names each one that changed.

Several processes (a mesh over several hosts) open the same folder: all of them save and restore through orbax
(each its own shards), process 0 alone writes ``run.json`` and ``metrics.jsonl`` and moves unreadable checkpoints.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import orbax.checkpoint as ocp

from sana_jax.commands.hosts import one_writer
from sana_jax.config import read_json
from sana_jax.errors import CheckpointError, ConfigError
from sana_jax.parallel.multihost import is_writer
from sana_jax.training.config import TrainConfig
from sana_jax.validate import all_finite

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
UNREADABLE = "unreadable_checkpoints"  # where checkpoints that do not restore are moved, by step


class RunDirectory:
    """Checkpoints and logs of one run. Opening an existing run checks that configuration and data match."""

    def __init__(self, path, trainer, dataset, *, keep: int = 3):
        self.path = Path(path).absolute()
        self.trainer = trainer
        self.path.mkdir(parents=True, exist_ok=True)
        signature = _as_json(trainer.run_signature(dataset))
        run_file = self.path / RUN_FILE
        if run_file.exists():
            previous = read_json(run_file, error=CheckpointError)
            if isinstance(previous.get("train"), dict):  # settings added since the run began count as their default
                previous["train"] = {**_as_json(TrainConfig().to_dict()), **previous["train"]}
            check_same_run(self.path, previous, signature)
        with one_writer() as writer:  # every process has the same signature: process 0 writes it
            if writer and not run_file.exists():
                tmp = run_file.with_suffix(".json.tmp")
                tmp.write_text(json.dumps(signature, indent=2, sort_keys=True))
                tmp.replace(run_file)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=True)
        self.manager = ocp.CheckpointManager(self.path / "checkpoints", options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore_latest(self) -> dict | None:
        """The state of the newest committed checkpoint that restores, or None for a fresh run. Newer ones that do
        not restore are moved to ``unreadable_checkpoints/`` with a warning (the run retrains their steps); none
        restoring is a CheckpointError. Metrics logged after the restored step (by an interrupted run) are dropped
        so that the log matches the resumed run."""
        failed = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                state = self._restore(step)
            except CheckpointError as e:
                failed.append((step, str(e)))
                continue
            if failed:
                self._set_aside(failed, step)
            self._truncate_metrics(step)
            return state
        if failed:
            raise CheckpointError(f"{self.path / 'checkpoints'}: no checkpoint restores ({_newest_reason(failed)}); "
                                  f"move the checkpoints folder aside to start again, or choose a new --out folder")
        self._truncate_metrics(0)
        return None

    def _restore(self, step: int) -> dict:
        try:
            state = self.manager.restore(step, args=ocp.args.StandardRestore(self.trainer.abstract_state()))
        except Exception as e:  # orbax and TensorStore raise assorted errors, with pages of detail
            raise CheckpointError(first_line(e, drop=f"{self.path}/")) from e
        if not all_finite(state):
            raise CheckpointError("it holds NaN or infinite values")
        return state

    def _set_aside(self, failed: list[tuple[int, str]], restored: int) -> None:
        """Move the checkpoints that did not restore out of orbax's folder (it would not save those steps again);
        process 0 moves them and warns, the others wait for it."""
        with one_writer() as writer:
            if writer:
                self._move_aside(failed, restored)
        self.manager.reload()

    def _move_aside(self, failed: list[tuple[int, str]], restored: int) -> None:
        aside = self.path / UNREADABLE
        aside.mkdir(exist_ok=True)
        for step, reason in failed:
            source, target = self.path / "checkpoints" / str(step), aside / str(step)
            n = 1
            while target.exists():
                n += 1
                target = aside / f"{step}-{n}"
            if source.exists():
                source.rename(target)
            warnings.warn(f"{self.path}: checkpoint step {step} does not restore ({reason}); resuming from step "
                          f"{restored} (step {step} moved to {target})", stacklevel=4)

    def save(self, step: int, state: dict) -> None:
        self.manager.save(step, args=ocp.args.StandardSave(state))

    def log(self, step: int, metrics: dict) -> None:
        """Append a line to ``metrics.jsonl`` (process 0; every process has the same metrics)."""
        if not is_writer():
            return
        with open(self.path / METRICS_FILE, "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")

    def _truncate_metrics(self, step: int) -> None:
        path = self.path / METRICS_FILE
        if not is_writer() or not path.exists():
            return
        lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
        path.write_text("".join(ln + "\n" for ln in lines))

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def check_same_run(path: Path, previous: dict, signature: dict) -> None:
    """A ConfigError naming each setting of ``signature`` whose value in ``previous`` (run.json) differs."""
    changed = _changes(previous, signature)
    if not changed:
        return
    groups = sorted({key.split(".")[0] for key, _, _ in changed})
    details = [f"run.json has {key.split('.', 1)[-1]} {old}, this run {new}" for key, old, new in changed[:6]]
    if len(changed) > 6:
        details.append(f"{len(changed) - 6} more")
    hint = ""
    if any(key == "train.total_steps" for key, _, _ in changed):
        hint = ("; the cosine schedule decays the learning rate to 0 at total_steps (--steps), so a longer run "
                "would change the steps already taken: train the exported weights in a new run instead")
    raise ConfigError(f"{path} holds a run with different {' and '.join(groups)} settings ({'; '.join(details)})"
                      f"{hint}; resume with the same settings or choose a new --out folder")


def _changes(old, new, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, value in ``old``, value in ``new``) of each leaf of ``new`` that ``old`` lacks or differs in
    (keys only ``old`` has, e.g. dropped settings, do not count)."""
    out = []
    for key, value in new.items():
        name = f"{prefix}{key}"
        before = old.get(key, _MISSING) if isinstance(old, dict) else _MISSING
        if isinstance(value, dict) and isinstance(before, dict):
            out += _changes(before, value, name + ".")
        elif before != value:
            out.append((name, "nothing" if before is _MISSING else json.dumps(before), json.dumps(value)))
    return out


_MISSING = object()


def first_line(error: BaseException, limit: int = 200, drop: str = "") -> str:
    """``error`` in one short line: its type and the first line of its message, without TensorStore's spec dump
    and without ``drop`` (e.g. the run folder, which the message around it names)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    for cut in (" See full TensorStore details", " [tensorstore_spec="):
        text = text.split(cut)[0]
    text = text.replace(drop, "") if drop else text
    text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _newest_reason(failed: list[tuple[int, str]]) -> str:
    """``step 3: reason; steps 2, 1 do not restore either`` (``failed`` newest first)."""
    (step, reason), older = failed[0], [str(s) for s, _ in failed[1:]]
    return f"step {step}: {reason}" + (f"; steps {', '.join(older)} do not restore either" if older else "")


def _as_json(value):
    """``value`` as read back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


def read_metrics(run_dir) -> list[dict]:
    path = Path(run_dir) / METRICS_FILE
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []

"""Bad inputs to training (issue 26, classes 2 and 6): numbers in the configs, checkpoints that do not restore, a
run continued to more steps or with other settings, and a run that diverges to NaN.

One tiny DiT and one training configuration for the API and the CLI cases (one compiled step, shared by the CLI
runs through the persistent compilation cache)."""

from __future__ import annotations

import glob
import json
import os
import shutil

import jax
import numpy as np
import pytest

import converters
from sana_jax.distill.config import DistillConfig
from sana_jax.errors import CheckpointError, ConfigError, InputError, NumericsError
from sana_jax.training import LatentDataset, TrainConfig, Trainer
from sana_jax.training.checkpoints import RunDirectory, read_metrics
from sana_jax.training.guard import DivergenceGuard
from tests.bad_inputs import assert_refused, run_cli
from tests.helpers import tiny_model

CONFIG = TrainConfig(learning_rate=1e-3, batch_size=2, ema_decay=0.9)
#: the CLI runs' options (with --out and --steps): CONFIG's, so that they share its compiled step
CLI = ["--batch-size", "2", "--lr", "1e-3", "--ema", "0.9", "--text-dropout", "0", "--save-every", "1", "-q"]


def dataset(nan_sample: int | None = None) -> LatentDataset:
    rng = np.random.default_rng(0)
    latents = rng.normal(size=(8, 2, 4, 4, 4)).astype(np.float32)
    if nan_sample is not None:
        latents[nan_sample, 0, 0, 0, 0] = np.nan
    return LatentDataset(latents, rng.normal(size=(2, 5, 8)).astype(np.float32), np.ones((2, 5), np.int32),
                         np.arange(8) % 2, np.zeros((1, 5, 8), np.float32), np.array([[1, 0, 0, 0, 0]], np.int32),
                         captions=["a", "b"])


def as_numpy(state: dict) -> dict:
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(state)}


def assert_same(state: dict, expected: dict) -> None:
    """``state`` equals ``expected`` (:func:`as_numpy` of a state) bit for bit."""
    a, b = as_numpy(state), expected
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture(scope="module")
def model():
    return tiny_model()  # only read by trainers


@pytest.fixture(scope="module")
def trainer(model):
    return Trainer(model, CONFIG)


@pytest.fixture(scope="module")
def finished(trainer, tmp_path_factory):
    """A run finished at step 3 with checkpoints 1, 2, 3, and the state of each of steps 3 and 5 trained in one go."""
    run = tmp_path_factory.mktemp("finished") / "run"
    at3 = as_numpy(trainer.fit(dataset(), 3, run_dir=run, save_every=1, log_every=1, progress=False))
    at5 = as_numpy(trainer.fit(dataset(), 5, progress=False))
    return run, at3, at5


@pytest.fixture
def run(finished, tmp_path):
    return shutil.copytree(finished[0], tmp_path / "run")


def damage(run, step: int) -> None:
    """Overwrite the data files of checkpoint ``step`` with zeros (a disk error, a bad copy)."""
    files = glob.glob(str(run / "checkpoints" / str(step) / "default" / "**" / "d" / "*"), recursive=True)
    assert files
    for name in files:
        with open(name, "r+b") as f:
            f.write(b"\0" * os.path.getsize(name))


def one_line(message: str) -> str:
    assert "\n" not in message and "TensorStore" not in message and "tensorstore_spec" not in message, message
    return message


# -- numbers of the configs ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("make, field", [
    (lambda: TrainConfig(learning_rate=float("nan")), "learning_rate must be a finite number, got nan"),
    (lambda: TrainConfig(batch_size=0), "batch_size must be an integer ≥ 1, got 0"),
    (lambda: TrainConfig(grad_clip=float("inf")), "grad_clip must be a finite number, got inf"),
    (lambda: DistillConfig(critic_learning_rate=-1e-6), "critic_learning_rate must be > 0"),
    (lambda: DistillConfig(student_timesteps=(1000.0, float("nan"))), "student_timesteps must decrease"),
])
def test_config_numbers_are_checked(make, field):
    with pytest.raises(ConfigError, match=field.replace("(", r"\(")):
        make()


def test_cli_lr_nan_is_refused_before_any_work(tmp_path, capsys):
    assert_refused(["train", "finetune", "--model", tmp_path, "--data", tmp_path, "--out", tmp_path / "r",
                    "--steps", "1", "--lr", "nan"], capsys, "--lr", "nan", status=2)
    assert not (tmp_path / "r").exists()


# -- checkpoints that do not restore ------------------------------------------------------------------------------

def test_damaged_newest_checkpoint_falls_back_with_a_warning(trainer, finished, run):
    damage(run, 3)
    with pytest.warns(UserWarning, match=r"checkpoint step 3 does not restore \(.*\); resuming from step 2") as w:
        state = trainer.fit(dataset(), 3, run_dir=run, save_every=1, log_every=1, progress=False)
    [warning] = [str(x.message) for x in w if "does not restore" in str(x.message)]  # one, in one line
    assert "\n" not in warning and "TensorStore" not in warning, warning
    assert_same(state, finished[1])  # step 3 retrained from checkpoint 2: as the run that was never damaged
    assert (run / "unreadable_checkpoints" / "3").is_dir()
    assert [m["step"] for m in read_metrics(run)] == [1, 2, 3]
    directory = RunDirectory(run, trainer, dataset())  # the retrained step 3 is the newest again and restores
    assert directory.latest_step() == 3 and int(directory.restore_latest()["step"]) == 3
    directory.close()


def test_no_checkpoint_restores_is_one_line(trainer, run):
    for step in (1, 2, 3):
        damage(run, step)
    with pytest.raises(CheckpointError) as e:
        trainer.fit(dataset(), 4, run_dir=run, progress=False)
    message = one_line(str(e.value))
    assert message.startswith(f"{run / 'checkpoints'}: no checkpoint restores (step 3: "), message
    assert "; steps 2, 1 do not restore either)" in message, message
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["1", "2", "3"]  # nothing moved or deleted


def test_checkpoint_holding_nan_is_not_resumed(trainer, finished, run):
    directory = RunDirectory(run, trainer, dataset())
    poisoned = jax.tree.map(np.copy, directory.restore_latest())
    poisoned["params"] = {n: np.full_like(v, np.nan) for n, v in poisoned["params"].items()}
    poisoned["step"] = np.asarray(4, np.int32)
    directory.save(4, poisoned)  # as an older version that saved whatever it had
    directory.close()
    with pytest.warns(UserWarning, match=r"step 4 does not restore \(it holds NaN or infinite values\)"):
        state = trainer.fit(dataset(), 3, run_dir=run, progress=False)
    assert_same(state, finished[1])


# -- continuing a run ---------------------------------------------------------------------------------------------

def test_larger_steps_continue_a_finished_run_exactly(trainer, finished, run):
    trained = []
    state = trainer.fit(dataset(), 5, run_dir=run, save_every=1, log_every=1, progress=False,
                        on_metrics=lambda step, _: trained.append(step))
    assert trained == [4, 5]  # from checkpoint 3
    assert_same(state, finished[2])  # bit-exact: the run trained to 5 in one go
    assert [m["step"] for m in read_metrics(run)] == [1, 2, 3, 4, 5]
    with pytest.raises(InputError, match=r"steps 4 is below step 5, where the run in .* already is"):
        trainer.fit(dataset(), 4, run_dir=run, progress=False)


def test_changed_settings_are_named_with_both_values(model, run):
    other = Trainer(model, TrainConfig(learning_rate=2e-3, batch_size=2, ema_decay=0.99))
    with pytest.raises(ConfigError) as e:
        RunDirectory(run, other, dataset())
    message = one_line(str(e.value))
    assert "different train settings (run.json has learning_rate 0.001, this run 0.002; run.json has ema_decay " \
           "0.9, this run 0.99)" in message, message


def test_cosine_schedule_is_not_stretched(model, tmp_path):
    """The cosine schedule decays to 0 at total_steps: a run cannot continue to more steps (its past steps' rates
    would change), and says so; a constant schedule has no total_steps in run.json."""
    cosine = dict(lr_schedule="cosine", batch_size=2)
    RunDirectory(tmp_path, Trainer(model, TrainConfig(total_steps=3, **cosine)), dataset()).close()
    with pytest.raises(ConfigError, match=r"run.json has total_steps 3, this run 5\); the cosine schedule decays"):
        RunDirectory(tmp_path, Trainer(model, TrainConfig(total_steps=5, **cosine)), dataset())
    constant = tmp_path / "constant"
    RunDirectory(constant, Trainer(model, TrainConfig(total_steps=3)), dataset()).close()
    assert "total_steps" not in json.loads((constant / "run.json").read_text())["train"]
    RunDirectory(constant, Trainer(model, TrainConfig(total_steps=5)), dataset()).close()


# -- a run that diverges ------------------------------------------------------------------------------------------

def first_seen_at(step: int) -> int:
    """A sample that the run's batches (size 2) first draw at 0-based step ``step``."""
    data = dataset()
    return next(i for i in data.indices(step, 2) if all(i not in data.indices(s, 2) for s in range(step)))


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(trainer, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(NumericsError) as e:  # NaN from step 3 on, found at step 4 (a save point)
        trainer.fit(dataset(nan_sample=first_seen_at(2)), 6, run_dir=run, save_every=2, log_every=6,
                    progress=False)
    message = one_line(str(e.value))
    assert message.startswith("training stopped at step 3 (training stage): loss is nan, grad_norm is nan; the last "
                              f"checkpoint, step 2 in {run / 'checkpoints'}, is kept"), message
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["2"]
    assert read_metrics(run) == []  # nothing logged (step 6 would have been the first log point)
    directory = RunDirectory(run, trainer, dataset())
    assert int(directory.restore_latest()["step"]) == 2  # restores, so it is finite
    directory.close()


def test_non_finite_state_is_never_saved():
    """The state is checked before each save and at the end, whatever the metrics said (e.g. an update that
    overflowed on a step whose loss was finite)."""
    guard = DivergenceGuard(lambda step: "generator" if step % 2 else "critic", lambda: "nothing was saved")
    guard.check_state({"step": np.int32(4), "w": np.ones(3, np.float32)}, 4)
    with pytest.raises(NumericsError, match=r"^training stopped at step 4 \(generator stage\): the weights or "
                                            r"optimiser state hold NaN or infinite values; nothing was saved"):
        guard.check_state({"step": np.int32(4), "w": np.array([1.0, np.inf, 0.0], np.float32)}, 4)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny transformer folder and a latent cache for it."""
    root = tmp_path_factory.mktemp("cli")
    converters.export_safetensors(tiny_model(), root / "transformer")
    dataset().save(root / "cache")
    return root


def finetune(folders, out, *options) -> list:
    return ["train", "finetune", "--model", folders / "transformer", "--data", folders / "cache", "--out", out,
            *CLI, *options]


def test_cli_continues_a_finished_run_and_names_a_changed_setting(folders, tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli(finetune(folders, run, "--steps", "2"), capsys)[0] == 0
    assert_refused(finetune(folders, run, "--steps", "3", "--lr", "2e-3"), capsys,
                   "run.json has learning_rate 0.001, this run 0.002", status=2)
    code, out, err = run_cli(finetune(folders, run, "--steps", "3"), capsys)
    assert code == 0 and "trained to step 3" in out, err
    assert [m["step"] for m in read_metrics(run)] == [2, 3]  # resumed from step 2
    straight = tmp_path / "straight"
    assert run_cli(finetune(folders, straight, "--steps", "3"), capsys)[0] == 0
    a, b = (converters.nnx_state.flat_params(converters.load(p / "transformer")) for p in (run, straight))
    for name in a:
        np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]), err_msg=name)


def test_cli_run_that_turns_nan_exits_non_zero_and_exports_nothing(folders, tmp_path, capsys):
    cache = tmp_path / "nan_cache"
    dataset(nan_sample=first_seen_at(2)).save(cache)
    run = tmp_path / "run"
    argv = ["train", "finetune", "--model", folders / "transformer", "--data", cache, "--out", run, *CLI,
            "--steps", "4"]
    line = assert_refused(argv, capsys, "training stopped at step 3 (training stage): loss is nan",
                          "step 2 in", "is kept", status=2)
    assert not (run / "transformer").exists(), line
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["1", "2"]

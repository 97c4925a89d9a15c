"""`cache`, `train finetune` (with a resumption) and `train adapt` as two processes joined by ``jax.distributed``
(CPU, one device each, gloo), the way a user starts them on two hosts sharing a file system: the work is split over
both processes, orbax checkpoints are written by both, everything else by process 0 alone, and the results equal
a one-process run of the same command.

(`generate`, `refine`, `stream` and the failure of one process: tests/test_multihost.py; `train distill`:
tests/test_distill_cli.py.)"""

from __future__ import annotations

import json

import numpy as np

import converters
from converters.nnx_state import flat_params
from sana_jax.cli import main
from sana_jax.training import LatentDataset
from tests.multihost import assert_both_ok, run_two
from tests.test_train_cli import FRAMES, SIZE, folders  # noqa: F401 (the tiny pipeline folder and clips)


def _weights(folder) -> dict:
    return {k: np.asarray(v) for k, v in flat_params(converters.load(folder)).items()}


def _same_weights(got, want, atol: float) -> None:
    got, want = _weights(got), _weights(want)
    assert got.keys() == want.keys()
    worst = max(float(np.abs(got[k] - want[k]).max()) for k in got)
    assert worst <= atol, worst


def _steps_logged(run) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_cache_finetune_and_adapt_over_two_processes_equal_one(folders, tmp_path, capsys):  # noqa: F811
    """`cache` with the clips' batches split over the processes (process 1 reads and encodes clip 1 only) writes the
    cache one process writes; `train finetune --mesh fsdp=2` (each process one half of every batch and of the
    weights, EMA and AdamW state; checkpoints written by both), its resumption to a later step (each process
    restoring its shards), and `train adapt --mesh data=2` end with the weights one process trains."""
    pipeline = str(folders / "pipeline")
    cache_args = ["cache", str(folders / "videos"), "--model", pipeline, "--frames", str(FRAMES), "--height",
                  str(SIZE), "--width", str(SIZE), "--batch-size", "1", "-q"]
    assert main([*cache_args, "--out", str(tmp_path / "cache1")]) == 0
    results = run_two([*cache_args, "--out", tmp_path / "cache2"])
    assert_both_ok(results)
    assert "wrote" in results[0].stdout and "wrote" not in results[1].stdout, results[1].stdout
    one, two = LatentDataset.open(tmp_path / "cache1"), LatentDataset.open(tmp_path / "cache2")
    assert two.captions == one.captions and two.size == one.size == 3
    np.testing.assert_allclose(two.latents, one.latents, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(two.text, one.text)

    def finetune(steps: int, out) -> list[str]:
        return ["train", "finetune", "--model", pipeline, "--data", tmp_path / "cache1", "--out", out, "--steps",
                str(steps), "--batch-size", "2", "--ema", "0.9", "--save-every", "1", "-q"]

    one_run, two_run = tmp_path / "one", tmp_path / "two"
    results = run_two([*finetune(2, two_run), "--mesh", "fsdp=2"])
    assert_both_ok(results)
    assert "trained to step 2" in results[0].stdout and "trained to step 2" not in results[1].stdout
    assert _steps_logged(two_run) == [2]  # one line, written once

    # both processes restore their shards of step 2 and go on; one process trains the 3 steps at once (its own
    # resumption is bit-exact: tests/test_training.py), so a shard restored wrong would show in the weights
    assert main([str(a) for a in finetune(3, one_run)]) == 0
    capsys.readouterr()
    results = run_two([*finetune(3, two_run), "--mesh", "fsdp=2"])
    assert_both_ok(results)
    assert _steps_logged(two_run) == [2, 3]
    _same_weights(two_run / "transformer", one_run / "transformer", atol=1e-5)

    # adapt (new patch embedding and projection, patch 2): process 0 writes the pipeline folder
    adapt = ["train", "adapt", "--from", pipeline, "--vae", pipeline, "--data", tmp_path / "cache1", "--patch-size",
             "2", "--steps", "2", "--batch-size", "2", "-q"]
    assert main([str(a) for a in [*adapt, "--out", tmp_path / "adapt1"]]) == 0
    results = run_two([*adapt, "--out", tmp_path / "adapt2", "--mesh", "data=2"])
    assert_both_ok(results)
    assert "wrote" in results[0].stdout and "wrote" not in results[1].stdout, results[1].stdout
    # AdamW's first steps move a weight by up to ±lr (1e-4) whatever its gradient's size, so where a gradient is
    # near zero the summation order of the sharded batch mean can show at 1e-5 (as in tests/test_parallel_pipeline.py)
    _same_weights(tmp_path / "adapt2" / "pipeline" / "transformer", tmp_path / "adapt1" / "pipeline" / "transformer",
                  atol=1e-4)


"""``sana-jax train distill`` on the embedded default model: its output folder is a student that ``sana-jax stream``
takes (its chunk size and schedule read from the folder), starting from an image; the PatchVAE streams exactly."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from sana_jax.cli import main
from sana_jax.demo import default_model_path
from sana_jax.io.video import read_video

pytestmark = pytest.mark.skipif(not (default_model_path() / "model_index.json").exists(),
                                reason="default model not built")


def test_patch_vae_streams_exactly():
    import converters

    vae = converters.load(default_model_path() / "vae")
    z = jax.random.normal(jax.random.key(0), (1, 7, 8, 8, 16))
    decoder = vae.stream_decoder()
    decoder.reset()
    pieces = [decoder.push(z[:, a:b]) for a, b in ((0, 3), (3, 5), (5, 7))]
    assert decoder.flush() is None and decoder.state_bytes == 0
    np.testing.assert_array_equal(np.concatenate(pieces, axis=1), vae.decode(z))


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distill")
    (tmp / "prompts.txt").write_text("a red circle moving left\n\na blue square moving up\n")
    assert main([*_distill_args(tmp), "--out", str(tmp / "run")]) == 0
    return tmp


def _distill_args(folder) -> list[str]:
    """The `student` fixture's command, but --out (prompts from ``folder``)."""
    return ["train", "distill", "--teacher", str(default_model_path()), "--prompts", str(folder / "prompts.txt"),
            "--steps", "2", "--ode-pairs", "2", "--ode-steps", "1", "--frames", "5", "--chunk-frames", "2",
            "--student-steps", "3", "--critic-updates", "1", "--batch-size", "2", "-q"]


def test_distill_writes_a_streaming_student(student):
    run, pipeline = student / "run", student / "run" / "pipeline"
    index = json.loads((pipeline / "model_index.json").read_text())
    stream = index["_sana_jax"]["stream"]
    assert stream["chunk_frames"] == 2 and stream["shift"] == 7.0 and stream["window"] == 1  # chunks (3, 2)
    assert stream["timesteps"] == pytest.approx([1000.0, 1000 * 2 / 3, 1000 / 3])
    assert index["_sana_jax"]["fps"] == 8  # the teacher's defaults kept
    metrics = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [3] and np.isfinite(metrics[0]["loss"])
    assert json.loads((run / "ode_pairs" / "cache.json").read_text())["latent_shape"] == [4, 5, 8, 8, 16]
    run_json = json.loads((run / "run.json").read_text())
    assert run_json["distill"]["guidance_scale"] == 1.5  # the teacher folder's guidance

    # the student differs from the teacher and streams from an image, in its own chunk size
    from PIL import Image

    image = np.zeros((64, 64, 3), np.uint8)
    image[20:36, 30:46] = (255, 0, 0)
    Image.fromarray(image).save(student / "first.png")
    out = student / "s.mp4"
    assert main(["stream", "a red circle moving left", "--model", str(pipeline), "--chunks", "2", "--image",
                 str(student / "first.png"), "--out", str(out), "-q"]) == 0
    assert read_video(out).shape == (1 + 2 * 2, 64, 64, 3)  # 2 chunks of 2 latent frames (1 frame each) after it


def test_distill_bad_input(student, tmp_path):
    base = ["train", "distill", "--teacher", str(default_model_path()), "--out", str(tmp_path / "r"), "--steps", "1"]
    (tmp_path / "empty.txt").write_text("\n \n")
    assert main([*base, "--prompts", str(tmp_path / "empty.txt")]) == 2
    assert main([*base, "--prompts", str(tmp_path / "missing.txt")]) == 2
    (tmp_path / "p.txt").write_text("a red circle\n")
    assert main([*base, "--prompts", str(tmp_path / "p.txt"), "--ode-steps", "2"]) == 2  # no ODE pairs
    assert not (tmp_path / "r" / "pipeline").exists()
    with pytest.raises(SystemExit) as refused:  # argparse refuses the value before anything runs
        main([*base, "--prompts", str(tmp_path / "p.txt"), "--chunk-frames", "0"])
    assert refused.value.code == 2
    # resuming with other settings is refused, and the run's folder is left as it was
    args = ["train", "distill", "--teacher", str(default_model_path()), "--prompts", str(student / "prompts.txt"),
            "--out", str(student / "run"), "--steps", "2", "--ode-pairs", "2", "--ode-steps", "1", "--frames", "5",
            "--chunk-frames", "2", "--student-steps", "3", "--critic-updates", "3", "--batch-size", "2", "-q"]
    assert main(args) == 2


def test_distill_over_two_processes_equals_one(student, tmp_path):
    """The fixture's command as two processes joined by ``jax.distributed`` with ``--mesh fsdp=2`` (CPU, one device
    each; tests/multihost.py): the ODE pairs sampled with their batches split over the processes; teacher, student,
    critic and both optimisers sharded over the two processes by the FSDP rules and every ODE and DMD batch split;
    process 0 writes the pairs and the student folder (gathered from both), which equal the one-process run's."""
    import converters
    from converters.nnx_state import flat_params
    from sana_jax.training import LatentDataset
    from tests.multihost import assert_both_ok, run_two

    results = run_two([*_distill_args(student), "--out", tmp_path / "run", "--mesh", "fsdp=2"])
    assert_both_ok(results)
    assert "wrote" in results[0].stdout and "wrote" not in results[1].stdout, results[1].stdout
    one, two = student / "run", tmp_path / "run"
    np.testing.assert_allclose(LatentDataset.open(two / "ode_pairs").latents,
                               LatentDataset.open(one / "ode_pairs").latents, rtol=0, atol=1e-5)
    assert (two / "metrics.jsonl").read_text().count("\n") == 1  # written once
    want, got = (flat_params(converters.load(run / "pipeline" / "transformer")) for run in (one, two))
    assert got.keys() == want.keys()
    assert max(float(np.abs(np.asarray(got[k]) - np.asarray(want[k])).max()) for k in got) <= 1e-5

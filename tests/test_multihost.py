"""`generate`, `refine` and `stream` as two processes joined by ``jax.distributed`` (CPU, one device each, gloo), the
way a user starts them on two hosts: the mesh spans both processes, only process 0 writes, and the result equals a
one-process run of the same command. A failure in one process ends both with one line.

(`train` and `cache`: tests/test_multihost_training.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from sana_jax.demo import default_model_path
from sana_jax.io.video import read_video
from tests.multihost import assert_both_ok, run_one, run_two

PROMPT = "a red circle moving left"


def _one_process(argv):
    run_one([*argv, "-q"])


def _same_video(a, b) -> None:
    """Frames from latents equal to ~1e-6: the same pixels but for the codec, which amplifies a rounding flip."""
    diff = np.abs(read_video(a).astype(int) - read_video(b).astype(int))
    assert diff.mean() < 0.5, diff.mean()


def _only_process_0_wrote(results, path) -> None:
    assert f"wrote {path}" in results[0].stdout
    assert f"wrote {path}" not in results[1].stdout, results[1].stdout


def test_generate_over_two_processes_equals_one(tmp_path):
    """`generate --mesh context=2` with the latent frames split over the two processes: process 0 writes the video
    and the latents, which equal one process's; process 1 writes nothing (the same --out, no clash)."""
    args = ["generate", PROMPT, "--frames", "8", "--steps", "4", "--seed", "3"]
    _one_process([*args, "--out", tmp_path / "one.mp4", "--save-latents", tmp_path / "one.npy"])
    out, latents = tmp_path / "two.mp4", tmp_path / "two.npy"
    results = run_two([*args, "--mesh", "context=2", "--out", out, "--save-latents", latents, "-q"])
    assert_both_ok(results)
    _only_process_0_wrote(results, out)
    np.testing.assert_allclose(np.load(latents), np.load(tmp_path / "one.npy"), rtol=0, atol=1e-5)
    _same_video(out, tmp_path / "one.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.mp4", "one.npy", "two.mp4", "two.npy"]


def test_an_error_in_one_process_ends_both_with_one_line(tmp_path):
    """Process 1 cannot read its --image: it says so and exits 2; process 0, already joined, is told and exits 1
    naming process 1 (instead of waiting in a collective for a peer that has gone)."""
    args = ["generate", PROMPT, "--frames", "8", "--mesh", "context=2", "--out", tmp_path / "x.mp4", "-q"]
    results = run_two(args, [*args, "--image", tmp_path / "missing.png"], timeout=120)
    assert results[1].returncode == 2
    assert results[1].stderr.strip().splitlines()[-1] == f"sana-jax generate: error: --image {tmp_path}/missing.png: " \
                                                          "no such file"
    assert results[0].returncode == 1
    assert results[0].stderr.strip().splitlines()[-1] == ("sana-jax generate: error: process 1 failed: --image "
                                                          f"{tmp_path}/missing.png: no such file")
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def ltx2(tmp_path_factory):
    pytest.importorskip("diffusers")
    from tests.test_two_stage import build_ltx2

    folder = tmp_path_factory.mktemp("ltx2") / "LTX-2"
    build_ltx2(folder)
    return folder


def test_refine_over_two_processes_equals_one(ltx2, tmp_path):
    """`refine --mesh context=2`: the refiner's video tokens over the two processes (Ulysses all-to-alls over
    gloo), the refined latents equal one process's."""
    stage1 = tmp_path / "stage1.npy"
    np.save(stage1, np.random.default_rng(0).standard_normal((1, 2, 2, 3, 8)).astype(np.float32))
    args = ["refine", stage1, "--model", ltx2, "--prompt", "a cat surfing", "--vae-tile", "0"]
    _one_process([*args, "--out", tmp_path / "one.mp4", "--save-latents", tmp_path / "one.npy"])
    out = tmp_path / "two.mp4"
    results = run_two([*args, "--mesh", "context=2", "--out", out, "--save-latents", tmp_path / "two.npy", "-q"])
    assert_both_ok(results)
    _only_process_0_wrote(results, out)
    np.testing.assert_allclose(np.load(tmp_path / "two.npy"), np.load(tmp_path / "one.npy"), rtol=0, atol=1e-5)


def test_stream_over_two_processes_equals_one(tmp_path):
    """`stream --mesh context=2`: each chunk's latent frames over the two processes; process 0 writes the live
    video, which equals one process's, and process 1 says it streamed with it."""
    args = ["stream", PROMPT, "--model", default_model_path(), "--chunks", "2", "--chunk-frames", "2"]
    _one_process([*args, "--out", tmp_path / "one.mp4"])
    out = tmp_path / "two.mp4"
    results = run_two([*args, "--mesh", "context=2", "--out", out, "-q"])
    assert_both_ok(results)
    _only_process_0_wrote(results, out)
    assert f"streamed {out} with process 0" in results[1].stdout
    _same_video(out, tmp_path / "one.mp4")

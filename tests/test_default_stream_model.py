"""The embedded streaming default: it ships in the package with the results it was shipped on, and `sana-jax stream`
uses it without --model: a clean stream of the prompt's colour. (Flat memory over the stream's length:
tests/test_streaming.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest

from sana_jax.cli import main
from sana_jax.demo import default_stream_model_path, shapes

DEFAULT = default_stream_model_path()
pytestmark = pytest.mark.skipif(not (DEFAULT / "model_index.json").exists(), reason="streaming default not built")


def test_ships_small_complete_and_recorded():
    size = sum(f.stat().st_size for f in DEFAULT.rglob("*") if f.is_file())
    assert size <= 20 * 2 ** 20, f"{size / 2 ** 20:.1f} MiB"
    index = json.loads((DEFAULT / "model_index.json").read_text())
    for component in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (DEFAULT / component).is_dir() and component in index
    stream = index["_sana_jax"]["stream"]
    assert stream["chunk_frames"] == 3 and len(stream["timesteps"]) == 4
    results = json.loads((DEFAULT / "recipe.json").read_text())["results_on_held_out"]
    assert results["accuracy"]["student_stream_whole"]["both"] >= results["accuracy"]["teacher_generate"]["both"]
    assert results["speedup_per_frame"] >= 4 and results["worst_frame_first_12_chunks"] >= 0.9


def test_stream_without_model_uses_the_default(tmp_path, capsys):
    from sana_jax.io.video import read_video

    out = tmp_path / "circle.mp4"
    assert main(["stream", "a red circle moving left", "--chunks", "4", "--out", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "embedded streaming default" in printed and "4/4 chunks" in printed
    frames = read_video(out)
    assert frames.shape == (13, 64, 64, 3)  # 1 + 4 chunks of 3 frames
    colour, _direction = shapes.measure(frames, wrap=True)
    assert colour == "red"
    clean = shapes.background_cleanliness(frames, (12, 12, 12))
    assert clean.mean() >= 0.9, np.round(clean, 3)

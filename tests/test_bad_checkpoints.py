"""Bad checkpoints give a typed error naming the fault, and ``sana-jax convert`` writes nothing."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

import converters
from converters.safetensors_io import SafetensorsFile, save_safetensors
from sana_jax import cli
from sana_jax.errors import CheckpointError, ConfigError
from tests.helpers import tiny_model

WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory):
    return converters.export_safetensors(tiny_model(), tmp_path_factory.mktemp("good") / "transformer")


@pytest.fixture
def folder(good_folder, tmp_path):
    return shutil.copytree(good_folder, tmp_path / "transformer")


def rewrite(folder, edit):
    f = SafetensorsFile(folder / WEIGHTS)
    tensors = {k: np.array(f[k]) for k in f}
    edit(tensors)
    save_safetensors(tensors, folder / WEIGHTS)


def convert_fails(folder, tmp_path, capsys, error_type, match):
    with pytest.raises(error_type, match=match):
        converters.load(folder)
    dst = tmp_path / "out.orbax"
    assert cli.main(["convert", str(folder), str(dst), "-q"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and len(err.strip().splitlines()) == 1, err
    assert not dst.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.orbax")], "temporary left behind"
    return err


def test_good_folder_converts_and_reloads(folder, tmp_path):
    dst = tmp_path / "ok.orbax"
    assert cli.main(["convert", str(folder), str(dst), "-q"]) == 0
    a, b = converters.load(folder), converters.load(dst)
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 4, 4)).astype(np.float32)
    text = np.ones((1, 3, 8), np.float32)
    np.testing.assert_array_equal(np.asarray(a(x, text, np.array([5.0]))), np.asarray(b(x, text, np.array([5.0]))))
    assert cli.main(["convert", str(folder), str(dst), "-q"]) == 2  # exists, no --overwrite


def test_truncated(folder, tmp_path, capsys):
    data = (folder / WEIGHTS).read_bytes()
    (folder / WEIGHTS).write_bytes(data[: len(data) // 2])
    convert_fails(folder, tmp_path, capsys, CheckpointError, "truncated")


def test_missing_key(folder, tmp_path, capsys):
    rewrite(folder, lambda t: t.pop("transformer_blocks.1.attn2.to_v.weight"))
    convert_fails(folder, tmp_path, capsys, CheckpointError, r"blocks.attn2.to_v.kernel layers \[1\]")


def test_extra_key(folder, tmp_path, capsys):
    rewrite(folder, lambda t: t.update({"transformer_blocks.0.attn1.extra.weight": np.ones(3, np.float32)}))
    convert_fails(folder, tmp_path, capsys, CheckpointError, "unexpected keys: transformer_blocks.0.attn1.extra")


def test_shape_mismatch(folder, tmp_path, capsys):
    cfg = json.loads((folder / "config.json").read_text())
    cfg["mlp_ratio"] = 3.0
    (folder / "config.json").write_text(json.dumps(cfg))
    convert_fails(folder, tmp_path, capsys, CheckpointError, "shape mismatches: transformer_blocks.0.ff.conv_")


def test_extra_layer_in_checkpoint(folder, tmp_path, capsys):
    cfg = json.loads((folder / "config.json").read_text())
    cfg["num_layers"] = 1
    (folder / "config.json").write_text(json.dumps(cfg))
    convert_fails(folder, tmp_path, capsys, CheckpointError, r"layer 1 ≥ 1 layers")


def test_config_of_another_model(folder, tmp_path, capsys):
    cfg = json.loads((folder / "config.json").read_text())
    cfg["_class_name"] = "CogVideoXTransformer3DModel"  # a class nothing here loads
    (folder / "config.json").write_text(json.dumps(cfg))
    convert_fails(folder, tmp_path, capsys, ConfigError, "CogVideoXTransformer3DModel")
    cfg["_class_name"] = "WanTransformer3DModel"  # one that loads, over SANA-Video weights
    (folder / "config.json").write_text(json.dumps(cfg))
    convert_fails(folder, tmp_path, capsys, CheckpointError, "not a Wan2.1 transformer checkpoint")


def test_pth_that_runs_code(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": {"x_embedder.proj.weight": torch.ones(1)}, "hook": Evil()}, tmp_path / "evil.pth")
    convert_fails(tmp_path / "evil.pth", tmp_path, capsys, CheckpointError, "refusing")
    assert not marker.exists()


def test_missing_weights_names_the_folder(folder, tmp_path):
    os.remove(folder / WEIGHTS)
    with pytest.raises(CheckpointError, match=f"{folder}: no weights found"):
        converters.load(folder)


def test_bf16_checkpoint_loads_as_bf16(folder):
    import ml_dtypes

    rewrite(folder, lambda t: t.update({k: v.astype(ml_dtypes.bfloat16) for k, v in t.items()}))
    model = converters.load(folder)
    assert str(model.blocks.attn1.to_q.kernel.dtype) == "bfloat16"
    model32 = converters.load(folder, dtype="float32")
    assert str(model32.blocks.attn1.to_q.kernel.dtype) == "float32"

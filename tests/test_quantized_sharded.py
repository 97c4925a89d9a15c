"""Sharded loading (``converters.load(…, mesh=)``) of an fp8 checkpoint, dequantised and with 8-bit weights: every
device holds exactly its block of each kernel and of its scale, and from a file that scales its weights the kernels
are read block by block only (docs/models-and-checkpoints.md, "fp8 and int8 weights"). Runs itself in a process with
8 fake CPU devices (``python tests/test_quantized_sharded.py FOLDER``); the test builds the checkpoint without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np

MESH = "tensor=2,context=4"
ROOT = Path(__file__).resolve().parents[1]


def write_fp8_folder(folder: Path) -> None:
    """A tiny SANA-Video transformer folder whose matrix and conv weights are fp8 with a per-tensor ``weight_scale``
    (the rest float32)."""
    import converters
    from converters import sana_video
    from converters.nnx_state import random_model
    from converters.safetensors_io import save_safetensors
    from tests.helpers import tiny_config

    model = random_model(sana_video, tiny_config(num_attention_heads=2, num_cross_attention_heads=2))
    tensors = {}
    for name, w in sana_video.export(model).items():
        if name.endswith(".weight") and w.ndim >= 2:
            scale = np.float32(np.abs(w).max() / 448)
            tensors[name] = (w / scale).astype(ml_dtypes.float8_e4m3fn)
            tensors[name[:-len("weight")] + "weight_scale"] = scale
        else:
            tensors[name] = w
    folder.mkdir()
    save_safetensors(tensors, folder / "diffusion_pytorch_model.safetensors")
    (folder / "config.json").write_text(json.dumps(model.config.to_diffusers()))
    del converters


def test_sharded_quantised_loading(tmp_path):
    write_fp8_folder(tmp_path / "transformer")
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, __file__, str(tmp_path / "transformer")], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    for weights, r in results.items():
        assert r["mismatched_shards"] == [], (weights, r["mismatched_shards"])
        assert r["dtypes"]["blocks.attn1.to_q.kernel"] == {"None": "float32", "fp8": "float8_e4m3fn",
                                                           "int8": "int8"}[weights]
        # heads over tensor: to_q's outputs (and so its scale) split in two, to_out's inputs (its scale replicated)
        assert r["specs"]["blocks.attn1.to_q.kernel"] == [None, None, "tensor"]
        assert r["specs"]["blocks.attn1.to_out.kernel"] == [None, "tensor", None]
        if weights != "None":
            assert r["specs"]["blocks.attn1.to_q.kernel_scale"] == [None, "tensor"]
            assert r["specs"]["blocks.attn1.to_out.kernel_scale"] == [None, None]
            assert r["scale_bytes_per_device"]["blocks.attn1.to_q.kernel_scale"] == 2 * 24 // 2 * 4
        assert r["to_q_rows_read"] == [12], r["to_q_rows_read"]  # only half of to_q's 24 rows, per block read
    # file scales kept: no weight is ever read whole; a computed (int8) scale reads each weight's columns whole
    assert results["fp8"]["whole_reads"] == [] and results["None"]["whole_reads"] == []
    assert "transformer_blocks.0.attn1.to_q.weight" in results["int8"]["whole_reads"]


def _case(folder: str) -> dict:
    import jax
    from flax import nnx

    import converters
    from converters.nnx_state import flatten
    from converters.quantized import DequantizedSource
    from converters.safetensors_io import SafetensorsFile
    from sana_jax.parallel import make_mesh

    slices, whole = [], []
    read_slice, getitem = SafetensorsFile.read_slice, DequantizedSource.__getitem__

    def record_slice(self, name, index):
        slices.append((name, index))
        return read_slice(self, name, index)

    def record_whole(self, name):
        whole.append(name)
        return getitem(self, name)

    SafetensorsFile.read_slice, DequantizedSource.__getitem__ = record_slice, record_whole
    mesh = make_mesh(MESH)
    results = {}
    for weights in (None, "fp8", "int8"):
        full = flatten(nnx.to_pure_dict(nnx.state(converters.load(folder, weights=weights))))
        slices.clear()
        whole.clear()
        sharded = flatten(nnx.to_pure_dict(nnx.state(converters.load(folder, weights=weights, mesh=mesh))))
        assert sharded.keys() == full.keys()
        bad = [f"{path} on {shard.device}" for path, array in sharded.items() for shard in array.addressable_shards
               if not np.array_equal(np.asarray(shard.data).view(np.uint8),
                                     np.asarray(full[path])[shard.index].view(np.uint8))]
        results[str(weights)] = {
            "mismatched_shards": bad,
            "dtypes": {p: np.dtype(a.dtype).name for p, a in sharded.items()},
            "specs": {p: list(a.sharding.spec) + [None] * (a.ndim - len(a.sharding.spec))
                      for p, a in sharded.items()},
            "scale_bytes_per_device": {p: max(s.data.nbytes for s in a.addressable_shards)
                                       for p, a in sharded.items() if p.endswith("kernel_scale")},
            "to_q_rows_read": sorted({len(range(*index[0].indices(24))) for name, index in slices
                                      if name == "transformer_blocks.0.attn1.to_q.weight"}),
            "whole_reads": sorted(set(whole)),
        }
    assert len(jax.devices()) == 8
    return results


if __name__ == "__main__":
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    os.environ["JAX_PLATFORMS"] = "cpu"
    print(json.dumps(_case(sys.argv[1])))

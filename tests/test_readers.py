"""The checkpoint readers: streaming safetensors (bf16 without float32) and the code-free torch zip reader."""

from __future__ import annotations

import json
import os

import ml_dtypes
import numpy as np
import pytest

from converters.safetensors_io import SafetensorsFile, open_safetensors, save_safetensors
from converters.torch_pickle import LazyTensor, load_torch_pickle, open_torch_state_dict
from sana_jax.errors import CheckpointError


def test_safetensors_round_trip_keeps_bf16(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"a": rng.standard_normal((3, 5)).astype(ml_dtypes.bfloat16),
               "b": rng.standard_normal(7).astype(np.float32), "empty": np.zeros((0, 4), np.float16),
               "scalar": np.array(916.0, np.float32)}
    save_safetensors(tensors, tmp_path / "x.safetensors")
    f = SafetensorsFile(tmp_path / "x.safetensors")
    assert f["a"].dtype == ml_dtypes.bfloat16 and isinstance(f["a"], np.memmap)  # no float32 copy
    for k, v in tensors.items():
        assert f.shape(k) == v.shape
        np.testing.assert_array_equal(f[k], v)


def test_reads_bf16_written_by_torch(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    t = torch.randn(4, 6).to(torch.bfloat16)
    save_file({"w": t}, tmp_path / "t.safetensors")
    got = open_safetensors(tmp_path / "t.safetensors")["w"]
    np.testing.assert_array_equal(got.astype(np.float32), t.float().numpy())


def test_sharded_index(tmp_path):
    save_safetensors({"a": np.ones(2, np.float32)}, tmp_path / "m-1.safetensors")
    save_safetensors({"b": np.zeros(3, np.float32)}, tmp_path / "m-2.safetensors")
    index = {"metadata": {}, "weight_map": {"a": "m-1.safetensors", "b": "m-2.safetensors"}}
    (tmp_path / "m.safetensors.index.json").write_text(json.dumps(index))
    f = open_safetensors(tmp_path / "m.safetensors.index.json")
    assert sorted(f) == ["a", "b"] and f.shape("b") == (3,)
    os.remove(tmp_path / "m-2.safetensors")
    with pytest.raises(CheckpointError, match="m-2.safetensors"):
        open_safetensors(tmp_path / "m.safetensors.index.json")


@pytest.mark.parametrize("cut", [4, 100, -3])
def test_truncated_safetensors(tmp_path, cut):
    save_safetensors({"a": np.ones((16, 16), np.float32)}, tmp_path / "x.safetensors")
    data = (tmp_path / "x.safetensors").read_bytes()
    (tmp_path / "x.safetensors").write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match="x.safetensors"):
        SafetensorsFile(tmp_path / "x.safetensors")


def test_torch_zip_reader_rebuilds_views_and_dtypes(tmp_path):
    torch = pytest.importorskip("torch")
    base = torch.randn(6, 8)
    sd = {"plain": torch.randn(3, 4), "bf16": torch.randn(5).to(torch.bfloat16), "ints": torch.arange(7),
          "transposed": base.t(), "offset_view": base[2:4, 1:5], "param": torch.nn.Parameter(torch.ones(2)),
          "scalar": torch.tensor(3.5), "half": torch.randn(2, 2).half()}
    torch.save({"state_dict": sd, "step": 12, "note": b"bytes"}, tmp_path / "c.pth")
    obj = load_torch_pickle(tmp_path / "c.pth")
    assert obj["step"] == 12 and obj["note"] == b"bytes"
    assert isinstance(obj["state_dict"]["plain"], LazyTensor)
    flat = open_torch_state_dict(tmp_path / "c.pth")
    for k, v in sd.items():
        want = v.detach().float().numpy() if v.dtype == torch.bfloat16 else v.detach().numpy()
        np.testing.assert_array_equal(np.asarray(flat[k], dtype=want.dtype), want, err_msg=k)
    assert flat.dtype("bf16") == ml_dtypes.bfloat16


def test_pickle_that_runs_code_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": {"w": torch.ones(1)}, "payload": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="system"):
        load_torch_pickle(tmp_path / "evil.pth")
    assert not marker.exists()


def test_not_a_zip(tmp_path):
    (tmp_path / "old.pth").write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(CheckpointError, match="not a torch zip"):
        load_torch_pickle(tmp_path / "old.pth")

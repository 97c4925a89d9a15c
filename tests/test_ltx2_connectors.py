"""LTX-2 text path after Gemma-3: feature extractor + connectors vs diffusers ``LTX2TextConnectors`` (float32)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.parity import check, reference, save_and_load, torch_call

diffusers = pytest.importorskip("diffusers")

from converters import ltx2_connectors, tables  # noqa: E402
from sana_jax.models.ltx2_connectors import LTX2ConnectorsConfig, LTX2TextConnectors  # noqa: E402
from tests.released_keys import Shapes, read  # noqa: E402


def tiny(rope_type="split", registers=4, double=True):
    return dict(caption_channels=32, text_proj_in_factor=3, video_connector_num_attention_heads=2,
                video_connector_attention_head_dim=16, video_connector_num_layers=2,
                video_connector_num_learnable_registers=registers, audio_connector_num_attention_heads=2,
                audio_connector_attention_head_dim=16, audio_connector_num_layers=1,
                audio_connector_num_learnable_registers=registers, rope_type=rope_type,
                rope_double_precision=double)


def make_reference(seed=0, **kw):
    from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors as Ref

    return reference(Ref, seed=seed, **tiny(**kw))


def inputs(padding_side="left", t=8, seed=1):
    rng = np.random.default_rng(seed)
    hidden = rng.standard_normal((2, t, 32, 3)).astype(np.float32) * 3
    mask = np.ones((2, t), np.int64)
    if padding_side == "left":
        mask[0, :5] = 0
    else:
        mask[0, 3:] = 0
    return hidden, mask


@pytest.mark.parametrize("rope_type,registers,padding_side,double", [
    ("split", 4, "left", True), ("interleaved", 4, "left", True), ("split", None, "left", False),
    ("split", 4, "right", True)])
def test_parity_with_diffusers(rope_type, registers, padding_side, double, tmp_path):
    ref = make_reference(rope_type=rope_type, registers=registers, double=double)
    ours = save_and_load(ref, tmp_path / "connectors")
    assert isinstance(ours, LTX2TextConnectors)
    hidden, mask = inputs(padding_side)
    want = torch_call(ref, hidden, mask, padding_side=padding_side)
    got = ours(hidden, mask, padding_side)
    check(got[0], want[0], what="video")
    check(got[1], want[1], what="audio")
    np.testing.assert_array_equal(np.asarray(got[2]), want[2])


def test_flattened_hidden_states_are_accepted(tmp_path):
    ours = save_and_load(make_reference(), tmp_path / "c")
    hidden, mask = inputs()
    a = ours(hidden, mask)[0]
    b = ours(hidden.reshape(2, 8, -1), mask)[0]
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_full_size_keys_in_both_layouts():
    cfg = LTX2ConnectorsConfig.preset("ltx-2.0")
    want = read("ltx2_diffusers.txt", "DIFFUSERS LTX2TextConnectors")
    assert ltx2_connectors.expected_tensors(cfg) == want
    section = read("ltx2_native.txt", "NATIVE Embeddings1DConnector")
    native = Shapes({f"model.diffusion_model.{w}_embeddings_connector.{k}": v for w in ("video", "audio")
                     for k, v in section.items()})
    native["text_embedding_projection.aggregate_embed.weight"] = (3840, 188160)
    renamed = ltx2_connectors.as_diffusers(native, "key list")
    assert {k: renamed.shape(k) for k in renamed} == want
    assert sum(int(np.prod(s)) for s in want.values()) == 1_431_475_200
    assert isinstance(renamed, tables.Subset)

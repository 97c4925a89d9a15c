"""DC-AE-V: parity with the DC-Gen reference fixture (tests/data/dc_ae_v_tiny/: random tiny weights and the
reference's outputs), one-shot and scanned chunk-causal forms, partial last chunks, spatial tiling, both checkpoint
layouts, full-size keys and parameter count, input errors. CPU float32."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from converters import dcae_v, tables
from converters.safetensors_io import open_safetensors, save_safetensors
from sana_jax.errors import CheckpointError, ConfigError, InputError
from sana_jax.vae.dcae_v import DCAEVConfig, DCAEVideo
from tests.parity import check, run_jitted, to_numpy
from tests.released_keys import read

FIXTURE = Path(__file__).resolve().parent / "data" / "dc_ae_v_tiny"


@pytest.fixture(scope="module")
def fixture():
    """The configuration and the reference's inputs and outputs, channels-last."""
    cfg = DCAEVConfig.from_json(FIXTURE / "config.json")
    with np.load(FIXTURE / "io.npz", allow_pickle=False) as d:
        io = {k: to_numpy(d[k]) for k in d.files}
    return cfg, io


@pytest.fixture(scope="module")
def safetensors_file(tmp_path_factory):
    """The fixture's weights written as safetensors (DC-Gen's names), with its ``config.json`` beside them."""
    folder = tmp_path_factory.mktemp("dc_ae_v_tiny")
    (folder / "config.json").write_bytes((FIXTURE / "config.json").read_bytes())
    pt = dcae_v.open_pt(FIXTURE / "dc_ae_v_tiny.pt")
    save_safetensors({k: np.asarray(pt[k]) for k in pt}, folder / "dc_ae_v_tiny.safetensors")
    return folder / "dc_ae_v_tiny.safetensors"


@pytest.fixture(scope="module")
def model_pt(fixture):
    return dcae_v.load(FIXTURE / "dc_ae_v_tiny.pt", fixture[0])


@pytest.fixture(scope="module")
def model_st(fixture, safetensors_file):
    return dcae_v.load(open_safetensors(safetensors_file), fixture[0], where=str(safetensors_file))


# ------------------------------------------------------------------------------------------------- parity
# Each distinct (shape, options) compiles the model once (~2-5 s on 2 cores): the tests share them where they can.
def test_one_shot_parity_from_pt(fixture, model_pt):
    cfg, io = fixture
    sf = cfg.scaling_factor
    z = run_jitted(model_pt, io["video"], "encode")
    assert z.shape == (1, 4, 2, 3, 8)
    check(z, io["latent"] * sf, what="encode")
    y = run_jitted(model_pt, io["latent"] * sf, "decode")
    assert y.shape == io["decoded"].shape
    check(y, io["decoded"], what="decode")


def test_scanned_parity_from_safetensors(fixture, model_st):
    """lax.scan over 8-frame / 2-latent tiles with a one-frame-per-conv cache = the reference's feature cache."""
    cfg, io = fixture
    sf = cfg.scaling_factor
    z = run_jitted(model_st, io["video"], "encode", chunked=True)
    check(z, io["latent_tiled"] * sf, what="scanned encode")
    y = run_jitted(model_st, io["latent"] * sf, "decode", chunked=True)
    check(y, io["decoded_tiled"], what="scanned decode")


def test_pt_and_safetensors_give_the_same_parameters(model_pt, model_st):
    fa, fb = dict(nnx.to_flat_state(nnx.state(model_pt))), dict(nnx.to_flat_state(nnx.state(model_st)))
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_array_equal(np.asarray(fa[k][...]), np.asarray(fb[k][...]))


def test_partial_last_chunk_is_encoded_and_decoded_alone(fixture, model_pt, rel_err):
    """20 frames with chunk 8: the two whole chunks are causal (the appended frames change nothing before them)
    and the last 4 frames are encoded without context (changing the frames before them changes nothing);
    likewise for decode, also in the scanned form with two chunks per step."""
    cfg, io = fixture
    sf = cfg.scaling_factor
    extra = np.random.default_rng(0).uniform(-1, 1, (1, 4, 64, 96, 3)).astype(np.float32)
    video = np.concatenate([io["video"], extra], axis=1)
    z = run_jitted(model_pt, video, "encode")
    assert z.shape == (1, 5, 2, 3, 8)
    check(z[:, :4], io["latent"] * sf)
    other = run_jitted(model_pt, np.concatenate([-io["video"], extra], axis=1), "encode")
    assert rel_err(other[:, 4:], z[:, 4:]) <= 1e-6 and rel_err(other[:, :4], z[:, :4]) > 1e-2

    y = run_jitted(model_pt, z, "decode")
    assert y.shape == (1, 20, 64, 96, 3)
    check(y[:, :16], io["decoded"])
    y_other = run_jitted(model_pt, np.concatenate([-z[:, :4], z[:, 4:]], axis=1), "decode")
    assert rel_err(y_other[:, 16:], y[:, 16:]) <= 1e-6
    assert rel_err(run_jitted(model_pt, z, "decode", chunked=True, chunks_per_step=2), y) <= 1e-5


def test_spatial_tiles(fixture, model_pt, rel_err):
    """Where only one tile covers the output, the tiled result is exactly that tile's result."""
    _, io = fixture
    v = io["video"]
    z = run_jitted(model_pt, v, "encode", normalized=False, tile=64, overlap=32)  # W tiles at 0 and 32 px
    assert z.shape == io["latent"].shape and np.all(np.isfinite(z))
    left = run_jitted(model_pt, v[:, :, :, :64], "encode", normalized=False)
    assert rel_err(z[..., :1, :], left[..., :1, :]) <= 1e-6

    lat = io["latent"]
    y = run_jitted(model_pt, lat, "decode", normalized=False, tile=2, overlap=1)  # latent W tiles at 0 and 1
    assert y.shape == io["decoded"].shape and np.all(np.isfinite(y))
    y_left = run_jitted(model_pt, lat[..., :2, :], "decode", normalized=False)
    assert rel_err(y[..., :32, :], y_left[..., :32, :]) <= 1e-6


# ------------------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_layouts_and_errors(fixture, safetensors_file):
    cfg, _ = fixture
    pt = dcae_v.open_pt(FIXTURE / "dc_ae_v_tiny.pt")
    st = open_safetensors(safetensors_file)
    assert set(pt) == set(st) and dcae_v.detect(pt) and dcae_v.detect(st)
    assert set(pt) == set(dcae_v.expected_tensors(cfg))
    assert dcae_v.config_from_checkpoint(st, str(safetensors_file)) == cfg  # config.json beside
    inferred = dcae_v.config_from_shapes(pt, "fixture")
    assert inferred.width_list == cfg.width_list and inferred.depth_list == cfg.depth_list
    assert inferred.latent_channels == 8 and inferred.temporal_compression == 4 and inferred.chunk_frames == 40
    missing = tables.Subset(st, [k for k in st if k != "decoder.stages.2.op_list.1.main.conv1.conv.weight"])
    with pytest.raises(CheckpointError, match=r"decoder\.stages\.2\.op_list\.1\.main|stages\.2\.blocks\.layers"):
        dcae_v.load(missing, cfg, where="missing")
    with pytest.raises(CheckpointError, match="shape"):
        dcae_v.load(st, DCAEVConfig.from_diffusers({**cfg.to_diffusers(), "latent_channels": 4}), where="wrong")


def test_pt_model_state_dict_fallback(safetensors_file, tmp_path):
    torch = pytest.importorskip("torch")
    st = open_safetensors(safetensors_file)
    sd = {k: torch.from_numpy(np.array(st[k])) for k in st}
    torch.save({"model_state_dict": sd, "global_step": 3}, tmp_path / "plain.pt")
    loaded = dcae_v.open_pt(tmp_path / "plain.pt")
    assert set(loaded) == set(st)
    np.testing.assert_array_equal(loaded["encoder.project_out.conv.weight"], st["encoder.project_out.conv.weight"])


# ------------------------------------------------------------------------------------------------- full size
def test_full_size_keys_and_parameter_count():
    cfg = DCAEVConfig.preset("dc-ae-v-f32t4c32-1.0")
    assert cfg.spatial_compression == 32 and cfg.latent_chunk == 10 and cfg.scaling_factor == 0.7241
    expected = dcae_v.expected_tensors(cfg)
    total = sum(int(np.prod(s)) for s in expected.values())
    assert round(total / 1e6, 2) == 2138.64
    assert round(sum(int(np.prod(s)) for k, s in expected.items() if k.startswith("encoder")) / 1e6, 2) == 916.66
    _, _, targets = dcae_v.abstract(cfg)  # jax.eval_shape of the whole model
    assert sum(int(np.prod(s)) for s, _ in targets.values()) == total
    c64 = dcae_v.expected_tensors(DCAEVConfig.preset("dc-ae-v-f32t4c64-1.0-bf16"))
    assert round(sum(int(np.prod(s)) for s in c64.values()) / 1e6, 1) == 2140.4
    ref = read("dc_ae_v_f32t4c32.txt")
    assert len(ref) == 340
    assert expected == ref


# ------------------------------------------------------------------------------------------------- inputs, configs
def _tiny() -> DCAEVideo:
    """An abstract model (no parameters allocated): the checks run before any computation."""
    cfg = DCAEVConfig(latent_channels=4, chunk_frames=8, width_list=(4, 8, 8, 8, 8, 8, 8), depth_list=(0,) + (1,) * 6)
    return nnx.eval_shape(lambda: DCAEVideo(cfg, rngs=nnx.Rngs(0)))


def test_input_errors():
    m = _tiny()
    with pytest.raises(InputError, match="15 frames.*12 or 16"):
        m.encode(jnp.zeros((1, 15, 64, 64, 3)))
    with pytest.raises(InputError, match="height 48.*32 or 64"):
        m.encode(jnp.zeros((1, 8, 48, 64, 3)))
    with pytest.raises(InputError, match="width 70.*64 or 96"):
        m.encode(jnp.zeros((1, 8, 64, 70, 3)))
    with pytest.raises(InputError, match="channels"):
        m.encode(jnp.zeros((1, 8, 64, 64, 4)))
    with pytest.raises(InputError, match="channels"):
        m.decode(jnp.zeros((1, 2, 2, 2, 3)))
    with pytest.raises(InputError, match="tile"):
        m.encode(jnp.zeros((1, 8, 64, 64, 3)), tile=48)
    with pytest.raises(InputError, match="overlap"):
        m.decode(jnp.zeros((1, 2, 2, 2, 4)), tile=2, overlap=2)
    with pytest.raises(InputError, match="chunks_per_step"):
        m.decode(jnp.zeros((1, 2, 2, 2, 4)), chunked=True, chunks_per_step=0)


def test_configs():
    cfg = DCAEVConfig.preset()
    assert DCAEVConfig.from_diffusers(cfg.to_diffusers()) == cfg
    assert DCAEVConfig.preset("dc-ae-v-f32t4c64-1.0").latent_channels == 64
    assert DCAEVConfig.preset("dc-ae-v-f64t4c128-1.0").spatial_compression == 64
    with pytest.raises(ConfigError, match="not DCAEVideo"):
        DCAEVConfig.from_diffusers({"_class_name": "AutoencoderKLWan"})
    with pytest.raises(ConfigError, match="unknown DC-AE-V preset"):
        DCAEVConfig.preset("dc-ae-f32c32")
    with pytest.raises(ConfigError, match="chunk_frames"):
        DCAEVConfig(chunk_frames=42)
    with pytest.raises(ConfigError, match="spatial_compression"):
        DCAEVConfig.from_diffusers({"spatial_compression": 16})

"""The model configs' shared reader and writer (``sana_jax.config.ModelConfig``) and the JSON reader: round trips,
and every refusal is a ConfigError naming the file and the key."""

from __future__ import annotations

import json
import re

import pytest

from sana_jax.config import read_json
from sana_jax.errors import CheckpointError, ConfigError, InputError
from sana_jax.models.gemma import GemmaConfig
from sana_jax.models.ltx2_connectors import LTX2ConnectorsConfig
from sana_jax.models.ltx2_transformer import LTX2TransformerConfig
from sana_jax.models.ltx2_upsampler import LTX2UpsamplerConfig
from sana_jax.models.preconditioning import FlowPreconditioning, PreconditionedConfig
from sana_jax.models.sana_video import SanaVideoConfig
from sana_jax.vae.dcae_v import DCAEVConfig
from sana_jax.vae.ltx2 import LTX2VAEConfig
from sana_jax.vae.patch import PatchVAEConfig
from sana_jax.vae.wan import WanVAEConfig

CONFIGS = [SanaVideoConfig, LTX2TransformerConfig, LTX2ConnectorsConfig, LTX2UpsamplerConfig, GemmaConfig,
           WanVAEConfig, LTX2VAEConfig, DCAEVConfig, PatchVAEConfig]


def write(tmp_path, data, name="config.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def refused(path, key):
    """``pytest.raises`` for a ConfigError naming ``path`` and ``key``."""
    return pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: key {re.escape(repr(key))}: ")


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_config_round_trips_and_reads_its_json(cls, tmp_path):
    cfg = cls()
    assert cls.from_diffusers(cfg.to_diffusers()) == cfg
    assert cls.from_json(write(tmp_path, cfg.to_diffusers())) == cfg


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_wrong_types_name_the_file_and_the_key(cls, tmp_path):
    config = cls().to_diffusers()
    key = next(k for k, v in config.items() if isinstance(v, int) and not isinstance(v, bool)
               and k in {f for f in cls.__dataclass_fields__})
    path = write(tmp_path, {**config, key: "many"})
    with refused(path, key):
        cls.from_json(path)


def test_type_messages_say_what_was_expected(tmp_path):
    path = write(tmp_path, {"patch_size": "abc", "num_layers": 2})
    with pytest.raises(ConfigError, match=r"key 'patch_size': expected a list of integers .*got 'abc'"):
        SanaVideoConfig.from_json(path)
    with refused("transformer/config.json", "num_layers"):
        SanaVideoConfig.from_diffusers({"num_layers": True}, "transformer/config.json")  # a bool is not a count
    with refused("vae/config.json", "latents_std"):
        WanVAEConfig.from_diffusers({"latents_std": [1.0, "x"]}, "vae/config.json")


def test_a_json_list_is_not_a_config(tmp_path):
    path = write(tmp_path, [1, 2, 3])
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: expected a JSON object, found list"):
        SanaVideoConfig.from_json(path)
    with pytest.raises(ConfigError, match="^manifest: expected a JSON object, found list"):
        WanVAEConfig.from_diffusers([1, 2], "manifest")


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_a_config_of_another_class_is_refused(cls, tmp_path):
    other = WanVAEConfig if cls is not WanVAEConfig else SanaVideoConfig
    path = write(tmp_path, other().to_diffusers())
    key = "model_type" if cls is GemmaConfig else "_class_name"  # transformers configs name no _class_name
    with refused(path, key):
        cls.from_json(path)


def test_an_unknown_class_is_refused_by_the_config_and_the_loader(tmp_path):
    import converters

    path = write(tmp_path, {"_class_name": "FluxTransformer2DModel", "in_channels": 64})
    with refused(path, "_class_name"):
        SanaVideoConfig.from_json(path)
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}.*FluxTransformer2DModel"):
        converters.load(tmp_path)


def test_options_the_model_does_not_have_are_refused_by_key():
    with refused("t.json", "guidance_embeds"):
        SanaVideoConfig.from_diffusers({"guidance_embeds": True}, "t.json")
    with refused("t.json", "gated_attn"):
        LTX2TransformerConfig.from_diffusers({"gated_attn": True}, "t.json")
    with refused("t.json", "qk_norm"):  # null is no norm for diffusers, which this model always has
        LTX2TransformerConfig.from_diffusers({"qk_norm": None}, "t.json")
    with refused("c.json", "video_gated_attn"):
        LTX2ConnectorsConfig.from_diffusers({"video_gated_attn": True}, "c.json")
    with refused("v.json", "is_residual"):
        WanVAEConfig.from_diffusers({"is_residual": True}, "v.json")
    with refused("v.json", "scale_factor_spatial"):  # a stored value that the structure contradicts
        WanVAEConfig.from_diffusers({"scale_factor_spatial": 16}, "v.json")
    with refused("v.json", "decoder_inject_noise"):
        LTX2VAEConfig.from_diffusers({"decoder_inject_noise": [True, False, False, False]}, "v.json")
    with refused("g.json", "use_bidirectional_attention"):
        GemmaConfig.from_hf({"model_type": "gemma3_text", "use_bidirectional_attention": True}, "g.json")
    with refused("t.json", "cross_attention_dim"):
        SanaVideoConfig.from_diffusers({"cross_attention_dim": None}, "t.json")


def test_the_dataclass_checks_name_the_file():
    with pytest.raises(ConfigError, match=r"^v\.json: latents_mean has 3 values"):
        WanVAEConfig.from_diffusers({"latents_mean": [0.0, 0.0, 0.0]}, "v.json")
    with pytest.raises(ConfigError, match=r"^metadata: .*dims must be 2 or 3"):
        LTX2UpsamplerConfig.from_native({"dims": 4}, "metadata")
    with pytest.raises(ConfigError, match=r"^metadata: key 'mid_channels'"):
        LTX2UpsamplerConfig.from_native({"mid_channels": "wide"}, "metadata")


def test_nulls_renames_and_our_own_options():
    assert SanaVideoConfig.from_diffusers({"num_layers": None}).num_layers == SanaVideoConfig().num_layers
    assert SanaVideoConfig.from_diffusers({"qk_norm": None}).qk_norm is None  # a field that may be None keeps it
    assert SanaVideoConfig.from_diffusers({"in_channels": 8}).out_channels == 8
    old = PatchVAEConfig.from_diffusers({"temporal_factor": 1, "spatial_factor": 4})  # folders written before
    assert (old.temporal_compression, old.spatial_compression) == (1, 4)
    assert "temporal_factor" not in old.to_diffusers()
    assert DCAEVConfig.from_diffusers({"chunk_size": 20}).chunk_frames == 20
    assert "video_only" not in LTX2TransformerConfig().to_diffusers()  # released keys only
    assert LTX2TransformerConfig.from_diffusers(LTX2TransformerConfig(video_only=True).to_diffusers()).video_only
    pre = PreconditionedConfig.wrap(SanaVideoConfig(), FlowPreconditioning(noise_scale=0.2))
    assert pre.to_diffusers()["preconditioning"] == {"sigma_data": 1.0, "noise_scale": 0.2}
    assert PreconditionedConfig.from_diffusers(pre.to_diffusers()) == pre


def test_compression_names_are_the_same_for_every_vae():
    for cfg, want in ((WanVAEConfig(), (4, 8)), (LTX2VAEConfig(), (8, 32)), (DCAEVConfig(), (4, 32)),
                      (PatchVAEConfig(), (4, 8))):
        assert (cfg.temporal_compression, cfg.spatial_compression) == want


def test_read_json(tmp_path):
    assert read_json(write(tmp_path, {"a": 1})) == {"a": 1}
    assert read_json(tmp_path / "absent.json", missing={}) == {}
    with pytest.raises(ConfigError, match="absent.json: cannot read"):
        read_json(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CheckpointError, match="bad.json: cannot read"):
        read_json(bad, error=CheckpointError, missing={})
    with pytest.raises(InputError, match="list.json: expected a JSON object, found list"):
        read_json(write(tmp_path, [], "list.json"), error=InputError)

"""The adaptation recipe, the latent cache and the ``sana-jax cache`` / ``sana-jax train`` commands, on a tiny
pipeline folder written with the embedded model's layout (no torch needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flax import nnx

import converters
from sana_jax.cli import main
from sana_jax.demo import models, recipe, shapes
from sana_jax.errors import ConfigError, InputError
from sana_jax.models.gemma import Gemma, GemmaConfig
from sana_jax.models.sana_video import SanaVideoConfig, SanaVideoTransformer
from sana_jax.training import LatentDataset
from sana_jax.training.adapt import REINITIALISED, adapt_transformer
from sana_jax.vae.patch import PatchVAE, PatchVAEConfig

SIZE, FRAMES = 16, 5


def tiny_transformer(channels: int = 4, seed: int = 0) -> SanaVideoTransformer:
    cfg = SanaVideoConfig(in_channels=channels, out_channels=channels, num_attention_heads=2, attention_head_dim=8,
                          num_layers=2, num_cross_attention_heads=2, cross_attention_head_dim=8,
                          cross_attention_dim=16, caption_channels=16, mlp_ratio=2.0, patch_size=(1, 1, 1),
                          sample_size=2)
    return SanaVideoTransformer(cfg, rngs=nnx.Rngs(seed))


def tiny_vae(channels: int) -> PatchVAE:
    return PatchVAE(PatchVAEConfig(latent_channels=channels, hidden_channels=16, num_res_blocks=1), rngs=nnx.Rngs(1))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny pipeline folder, a second VAE with other channels, and captioned mp4 clips."""
    from sana_jax.io.video import write_video

    root = tmp_path_factory.mktemp("train_cli")
    text = Gemma(GemmaConfig(vocab_size=len(models.vocabulary()), hidden_size=16, intermediate_size=32,
                             num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                             query_pre_attn_scalar=8.0, sliding_window=16), rngs=nnx.Rngs(2))
    pipeline = recipe.write_pipeline_folder(root / "pipeline", tiny_transformer(), tiny_vae(4), text)
    index = json.loads((pipeline / "model_index.json").read_text())
    index["_sana_jax"] = {**index["_sana_jax"], "height": SIZE, "width": SIZE, "num_frames": FRAMES}
    (pipeline / "model_index.json").write_text(json.dumps(index))
    recipe.write_component(root / "vae6", tiny_vae(6))
    videos = root / "videos"
    videos.mkdir()
    for i, (clip, caption) in enumerate(shapes.dataset(3, size=24, frames=FRAMES + 2, seed=4)):
        write_video(clip, videos / f"clip{i}.mp4", fps=8)
        (videos / f"clip{i}.txt").write_text(caption)
    return root


def test_adapt_reinitialises_exactly_the_named_layers():
    source = tiny_transformer(channels=4)
    source.patch_embedding_bias.set_value(source.patch_embedding_bias[...] + 0.5)  # as a trained model's
    adapted = adapt_transformer(source, channels=6, patch_size=(1, 2, 2), seed=3)
    assert adapted.config.in_channels == adapted.config.out_channels == 6
    assert adapted.config.patch_size == (1, 2, 2)
    before, after = converters.nnx_state.flat_params(source), converters.nnx_state.flat_params(adapted)
    assert before.keys() == after.keys()
    for name in before:
        if name in REINITIALISED:
            assert after[name].shape != before[name].shape or not np.array_equal(after[name], before[name])
        else:
            np.testing.assert_array_equal(np.asarray(after[name]), np.asarray(before[name]), err_msg=name)
    assert after["patch_embedding_kernel"].shape == (1, 2, 2, 6, 16)
    assert after["proj_out.kernel"].shape == (16, 24) and float(np.abs(after["proj_out.kernel"]).max()) > 0
    np.testing.assert_array_equal(after["patch_embedding_bias"], 0.0)


def test_cache_then_finetune_then_adapt(folders, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert main(["cache", str(folders / "videos"), "--model", str(folders / "pipeline"), "--out", str(cache),
                 "--frames", str(FRAMES), "--height", str(SIZE), "--width", str(SIZE), "-q"]) == 0
    data = LatentDataset.open(cache)
    assert data.size == 3 and data.latents.shape == (3, 2, 2, 2, 4)
    assert data.text.shape[1:] == (models.MAX_SEQUENCE_LENGTH, 16) and data.null_text.shape[0] == 1
    assert sorted(data.captions) == sorted(p.read_text() for p in (folders / "videos").glob("*.txt"))

    run = tmp_path / "run"
    args = ["--steps", "2", "--batch-size", "2", "--ema", "0.9", "--save-every", "1", "-q"]
    assert main(["train", "finetune", "--model", str(folders / "pipeline"), "--data", str(cache), "--out", str(run),
                 *args]) == 0
    tuned = converters.load(run / "transformer")
    assert isinstance(tuned, SanaVideoTransformer)
    assert [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()] == [2]

    cache6 = tmp_path / "cache6"
    assert main(["cache", str(folders / "videos"), "--model", str(folders / "pipeline"), "--vae",
                 str(folders / "vae6"), "--out", str(cache6), "--frames", str(FRAMES), "--height", str(SIZE),
                 "--width", str(SIZE), "-q"]) == 0
    out = tmp_path / "adapted"
    assert main(["train", "adapt", "--from", str(folders / "pipeline"), "--vae", str(folders / "vae6"),
                 "--data", str(cache6), "--out", str(out), *args]) == 0
    from sana_jax.pipelines import SanaVideoPipeline

    pipe = SanaVideoPipeline.from_pretrained(out / "pipeline")
    assert pipe.transformer.config.in_channels == 6 and pipe.vae.config.latent_channels == 6
    assert "re-initialised" in capsys.readouterr().out


def test_cli_errors_are_one_line(folders, tmp_path, capsys):
    assert main(["train", "finetune", "--model", str(folders / "pipeline"), "--data", str(tmp_path),
                 "--out", str(tmp_path / "r"), "--steps", "1"]) == 2
    assert "not a latent cache" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["cache", str(tmp_path / "empty"), "--model", str(folders / "pipeline"), "--out",
                 str(tmp_path / "c"), "--frames", "5", "--height", "16", "--width", "16"]) == 2
    assert "no videos" in capsys.readouterr().err
    assert main(["cache", str(folders / "videos"), "--model", str(folders / "pipeline"), "--out",
                 str(tmp_path / "c"), "--frames", "6", "--height", "16", "--width", "16"]) == 2
    assert "must be 1 + 4·k; nearest valid 5 or 9" in capsys.readouterr().err


def test_demo_options_reach_the_recipe(tmp_path, monkeypatch, capsys):
    """``sana-jax train demo`` passes exactly the options given (the rest stay the recipe's DEFAULTS, which made
    the shipped model) and refuses unknown values before any work."""
    seen = {}

    def fake(out, **kw):
        seen.update(kw, out=out)
        return {"times": {"dit_s": 1.0}}

    monkeypatch.setattr(recipe, "make_default_model", fake)
    assert main(["train", "demo", "--out", str(tmp_path / "m"), "--dit-steps", "7", "--dit-batch", "4", "--lr", "2e-3",
                 "--paths", "crossing", "--timestep-sampling", "uniform", "--pure-noise-fraction", "0.25",
                 "--ema-decay", "0.999", "-q"]) == 0
    assert {k: seen[k] for k in ("dit_steps", "dit_batch", "learning_rate", "paths", "timestep_sampling",
                                 "pure_noise_fraction", "ema_decay")} == {
        "dit_steps": 7, "dit_batch": 4, "learning_rate": 2e-3, "paths": "crossing", "timestep_sampling": "uniform",
        "pure_noise_fraction": 0.25, "ema_decay": 0.999}
    assert not {"clips", "vae_from", "dit_from"} & set(seen)
    assert main(["train", "demo", "--out", str(tmp_path / "m"), "--dit-from", "earlier", "--paths", "lane", "-q"]) == 0
    assert seen["dit_from"] == "earlier" and seen["paths"] == "lane"
    assert not {"noise_scale", "unnamed_background"} & set(seen)
    assert main(["train", "demo", "--out", str(tmp_path / "m"), "--noise-scale", "0.1", "--unnamed-background",
                 "black", "-q"]) == 0
    assert (seen["noise_scale"], seen["unnamed_background"]) == (0.1, "black")
    assert main(["train", "demo", "--out", str(tmp_path / "m"), "--noise-scale", "0", "--unnamed-background",
                 "any", "-q"]) == 0  # explicitly the plain velocity model on any background
    assert (seen["noise_scale"], seen["unnamed_background"]) == (None, None)
    with pytest.raises(SystemExit):
        main(["train", "demo", "--out", str(tmp_path / "m"), "--paths", "diagonal"])
    assert "invalid choice" in capsys.readouterr().err
    monkeypatch.undo()
    with pytest.raises(InputError, match="unknown demo settings"):
        recipe.make_default_model(tmp_path / "n", warp_speed=True)
    for bad in ({"ema_decay": 1.5}, {"pure_noise_fraction": -0.1}, {"noise_scale": -1.0}):  # before any work
        with pytest.raises(ConfigError, match=next(iter(bad))):
            recipe.make_default_model(tmp_path / "n", **bad)
    with pytest.raises(InputError, match="unnamed_background"):
        recipe.make_default_model(tmp_path / "n", unnamed_background="plaid")
    assert not list(tmp_path.glob("n*"))

"""Tiny Wan2.1 model folders for the pipeline and CLI tests, built from random-weight JAX models (no torch needed
for the diffusers layout): ``tiny_wan_folder(root, layout="diffusers" | "original")``, and a CausVid / Self-Forcing
style student checkpoint (``student_checkpoint``, torch needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import converters
from converters import umt5 as umt5_converter
from converters import wan_transformer, wan_vae
from converters.nnx_state import flat_params, random_model
from converters.tables import rename_back
from converters.safetensors_io import save_safetensors
from sana_jax.models.umt5 import UMT5Config
from sana_jax.models.wan import WanConfig, WanTransformer
from sana_jax.vae.wan import WanVAEConfig

WORDS = ["▁a", "▁cat", "▁dog", "▁red", "▁blue", "▁circle", "▁moving", "▁left", "▁right", "▁on", "▁the", "▁sea",
         "▁surfing", "▁wave", "▁big", "▁sleeping"]
TEXT_DIM = 32
CHANNELS = 16  # Wan2.1's: the original Wan2.1_VAE.pth carries no config, its latents statistics are Wan2.1's

VAE = dict(base_dim=8, z_dim=CHANNELS, dim_mult=[1, 2, 2, 2], num_res_blocks=1, temperal_downsample=[False, True, True])


DIT = WanConfig(num_attention_heads=2, attention_head_dim=16, in_channels=CHANNELS, out_channels=CHANNELS,
                text_dim=TEXT_DIM, freq_dim=32, ffn_dim=48, num_layers=2)
TEXT = UMT5Config(vocab_size=64, d_model=TEXT_DIM, d_kv=8, d_ff=48, num_layers=2, num_heads=4)


def tiny_models(seed: int = 0):
    """(transformer, text encoder, VAE) of the tiny folder, random weights."""
    return (random_model(wan_transformer, DIT, seed=seed), random_model(umt5_converter, TEXT, seed=seed + 1),
            random_model(wan_vae, WanVAEConfig(**VAE), seed=seed + 2))


def tokenizer(folder: Path) -> Path:
    """A tiny umt5-like tokenizer (Unigram, ``</s>`` appended), saved by transformers' own T5 class."""
    import transformers

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(w, -1.0 - i / 10) for i, w in enumerate(WORDS)]
    transformers.T5TokenizerFast(vocab=vocab, extra_ids=0).save_pretrained(folder)
    return folder


def _torch_save(state: dict, path: Path) -> None:
    import torch

    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, path)


def tiny_wan_folder(root: Path, *, layout: str = "diffusers", seed: int = 0, scheduler: dict | None = None) -> Path:
    """A complete tiny Wan2.1 folder. diffusers: model_index.json + the five components (UniPC flow scheduler,
    shift 3, unless ``scheduler`` gives another config). original: config.json + safetensors DiT,
    ``models_t5_umt5-xxl-enc-bf16.pth``, ``Wan2.1_VAE.pth``, ``google/umt5-xxl/``."""
    dit, text, vae = tiny_models(seed)
    root.mkdir(parents=True, exist_ok=True)
    if layout == "diffusers":
        for name, model in (("transformer", dit), ("text_encoder", text), ("vae", vae)):
            converters.export_safetensors(model, root / name)
        tokenizer(root / "tokenizer")
        (root / "scheduler").mkdir()
        (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler or {
            "_class_name": "UniPCMultistepScheduler", "prediction_type": "flow_prediction", "use_flow_sigmas": True,
            "flow_shift": 3.0, "num_train_timesteps": 1000, "solver_order": 2, "solver_type": "bh2",
            "predict_x0": True, "lower_order_final": True, "final_sigmas_type": "zero"}))
        index = {"_class_name": "WanPipeline", "_diffusers_version": "0.42.1",
                 "scheduler": ["diffusers", "UniPCMultistepScheduler"],
                 "text_encoder": ["transformers", "UMT5EncoderModel"], "tokenizer": ["transformers", "T5TokenizerFast"],
                 "transformer": ["diffusers", "WanTransformer3DModel"], "vae": ["diffusers", "AutoencoderKLWan"]}
        (root / "model_index.json").write_text(json.dumps(index))
        return root
    cfg = dit.config
    (root / "config.json").write_text(json.dumps({
        "_class_name": "WanModel", "dim": cfg.inner_dim, "eps": cfg.eps, "ffn_dim": cfg.ffn_dim,
        "freq_dim": cfg.freq_dim, "in_dim": cfg.in_channels, "model_type": "t2v", "num_heads": cfg.num_attention_heads,
        "num_layers": cfg.num_layers, "out_dim": cfg.out_channels, "text_len": 512, "text_dim": TEXT_DIM}))
    save_safetensors(wan_transformer.export_original(dit), root / "diffusion_pytorch_model.safetensors")
    _torch_save(umt5_converter.export_original(text), root / "models_t5_umt5-xxl-enc-bf16.pth")
    _torch_save(rename_back(wan_vae.original_renames(vae.config), wan_vae.export(vae)), root / "Wan2.1_VAE.pth")
    tokenizer(root / "google" / "umt5-xxl")
    return root


def student_checkpoint(path: Path, *, seed: int = 5, kind: str = "causvid") -> WanTransformer:
    """A student DiT (random weights, the tiny folder's shapes) saved as CausVid's ``{"generator": …}`` or
    Self-Forcing's ``{"generator", "critic", "generator_ema"}`` with ``model.``-prefixed original names; returns the
    DiT whose weights the file holds (Self-Forcing: the EMA ones)."""
    import torch

    dit = tiny_models(seed)[0]
    state = {f"model.{k}": torch.from_numpy(np.array(v))  # a writable copy
             for k, v in wan_transformer.export_original(dit).items()}
    if kind == "causvid":
        torch.save({"generator": state}, path)
    else:
        other = {k: v + 1 for k, v in state.items()}
        torch.save({"generator": other, "critic": other, "generator_ema": state}, path)
    return dit


def same_weights(a, b) -> bool:
    pa, pb = flat_params(a), flat_params(b)
    return pa.keys() == pb.keys() and all(np.array_equal(np.asarray(pa[k]), np.asarray(pb[k])) for k in pa)


__all__ = ["same_weights", "student_checkpoint", "tiny_models", "tiny_wan_folder", "tokenizer"]

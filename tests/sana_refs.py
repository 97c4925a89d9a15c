"""Tiny random-weight diffusers SANA-Video transformers, and their original-Sana ``.pth`` form, for parity tests
(built with the harness of tests/parity.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.parity import reference, to_numpy, to_torch, torch, torch_call

diffusers = pytest.importorskip("diffusers")


def tiny_kwargs(in_channels: int = 16, patch=(1, 2, 2), **over) -> dict:
    kw = dict(in_channels=in_channels, out_channels=in_channels, num_attention_heads=2, attention_head_dim=16,
              num_layers=2, num_cross_attention_heads=2, cross_attention_head_dim=16, cross_attention_dim=32,
              caption_channels=20, mlp_ratio=2.5, patch_size=tuple(patch), sample_size=8,
              qk_norm="rms_norm_across_heads", attention_bias=False)
    kw.update(over)
    return kw


def make_reference(seed: int = 0, **kwargs):
    """A diffusers ``SanaVideoTransformer3DModel`` with every parameter random (norm weights and biases too)."""
    return reference(diffusers.SanaVideoTransformer3DModel, seed=seed, scale=0.2, **kwargs)


def to_original_layout(sd: dict) -> dict:
    """diffusers state dict → original Sana ``.pth`` ``state_dict`` (the inverse of
    ``huggingface/diffusers:scripts/convert_sana_video_to_diffusers.py``), plus y_embedding."""
    out = {}
    blocks = sorted({int(k.split(".")[1]) for k in sd if k.startswith("transformer_blocks.")})
    top = {"patch_embedding": "x_embedder.proj", "caption_projection.linear_1": "y_embedder.y_proj.fc1",
           "caption_projection.linear_2": "y_embedder.y_proj.fc2",
           "time_embed.emb.timestep_embedder.linear_1": "t_embedder.mlp.0",
           "time_embed.emb.timestep_embedder.linear_2": "t_embedder.mlp.2", "time_embed.linear": "t_block.1",
           "proj_out": "final_layer.linear"}
    for d, s in top.items():
        out[f"{s}.weight"], out[f"{s}.bias"] = sd[f"{d}.weight"], sd[f"{d}.bias"]
    out["attention_y_norm.weight"] = sd["caption_norm.weight"]
    out["final_layer.scale_shift_table"] = sd["scale_shift_table"]
    for i in blocks:
        t, b = f"transformer_blocks.{i}", f"blocks.{i}"
        out[f"{b}.scale_shift_table"] = sd[f"{t}.scale_shift_table"]
        out[f"{b}.attn.qkv.weight"] = torch.cat([sd[f"{t}.attn1.to_{x}.weight"] for x in "qkv"])
        out[f"{b}.attn.q_norm.weight"] = sd[f"{t}.attn1.norm_q.weight"]
        out[f"{b}.attn.k_norm.weight"] = sd[f"{t}.attn1.norm_k.weight"]
        out[f"{b}.attn.proj.weight"] = sd[f"{t}.attn1.to_out.0.weight"]
        out[f"{b}.attn.proj.bias"] = sd[f"{t}.attn1.to_out.0.bias"]
        out[f"{b}.cross_attn.q_linear.weight"] = sd[f"{t}.attn2.to_q.weight"]
        out[f"{b}.cross_attn.q_linear.bias"] = sd[f"{t}.attn2.to_q.bias"]
        for p in ("weight", "bias"):
            out[f"{b}.cross_attn.kv_linear.{p}"] = torch.cat([sd[f"{t}.attn2.to_k.{p}"], sd[f"{t}.attn2.to_v.{p}"]])
            out[f"{b}.cross_attn.proj.{p}"] = sd[f"{t}.attn2.to_out.0.{p}"]
            out[f"{b}.mlp.inverted_conv.conv.{p}"] = sd[f"{t}.ff.conv_inverted.{p}"]
            out[f"{b}.mlp.depth_conv.conv.{p}"] = sd[f"{t}.ff.conv_depth.{p}"]
        out[f"{b}.cross_attn.q_norm.weight"] = sd[f"{t}.attn2.norm_q.weight"]
        out[f"{b}.cross_attn.k_norm.weight"] = sd[f"{t}.attn2.norm_k.weight"]
        out[f"{b}.mlp.point_conv.conv.weight"] = sd[f"{t}.ff.conv_point.weight"]
        out[f"{b}.mlp.t_conv.weight"] = sd[f"{t}.ff.conv_temp.weight"]
    width, caption = sd["caption_norm.weight"].shape[0], sd["caption_projection.linear_1.weight"].shape[1]
    out["y_embedder.y_embedding"] = torch.randn(7, caption)  # training-only null caption: must be dropped
    assert sum(v.numel() for k, v in out.items() if k != "y_embedder.y_embedding") == sum(
        v.numel() for v in sd.values()), width
    return out


def run_reference(model, latents_cl: np.ndarray, text: np.ndarray, timestep: np.ndarray, mask: np.ndarray | None,
                  ) -> np.ndarray:
    """Run diffusers on channels-last numpy inputs; returns channels-last numpy output."""
    out = torch_call(model, to_torch(latents_cl), encoder_hidden_states=text, timestep=timestep,
                     encoder_attention_mask=mask, return_dict=False)[0]
    return to_numpy(out)

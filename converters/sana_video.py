"""SANA-Video transformer checkpoints: the diffusers layout and the original Sana ``.pth`` layout.

References: ``huggingface/diffusers:src/diffusers/models/transformers/transformer_sana_video.py`` (diffusers names and
shapes), ``huggingface/diffusers:scripts/convert_sana_video_to_diffusers.py`` (original ``.pth`` → diffusers).
The original layout is first presented under diffusers names (fused ``qkv``/``kv_linear`` split lazily, training-only
tensors dropped), so one table, :data:`DIFFUSERS_RULES`, maps both onto the JAX parameters.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from converters import tables
from converters.nnx_state import abstract_model, flat_params
from converters.tables import CONV1X1, CONV3D, DEPTHWISE2D, IDENTITY, LINEAR, TEMPORAL, Rename, Rule
from sana_jax.errors import CheckpointError, ConfigError
from sana_jax.models.preconditioning import PreconditionedConfig, build_transformer
from sana_jax.models.sana_video import DIFFUSERS_CLASS
from sana_jax.models.sana_video import SanaVideoConfig, SanaVideoTransformer


class Config(abc.ABC):
    """This family's configs: a :class:`SanaVideoConfig` (the released models), or a :class:`PreconditionedConfig`
    when ``config.json`` has a ``"preconditioning"`` key (the embedded default model), which loads as a
    :class:`~sana_jax.models.preconditioning.PreconditionedTransformer` with the same tensors."""

    @staticmethod
    def from_diffusers(config: Mapping, source: str = "config") -> SanaVideoConfig:
        cls = PreconditionedConfig if "preconditioning" in config else SanaVideoConfig
        return cls.from_diffusers(config, source)


Config.register(SanaVideoConfig)  # isinstance(c, CONFIG) for both (PreconditionedConfig is a SanaVideoConfig)

FAMILY = "sana_video"
CONFIG = Config
MODEL_CLASS_NAME = DIFFUSERS_CLASS
#: the LongLive (LongSANA) release has the same tensors under the causal class name (diffusers PR #12723)
MODEL_CLASS_NAMES = (DIFFUSERS_CLASS, "SanaVideoCausalTransformer3DModel")
MODEL = SanaVideoTransformer  # PreconditionedTransformer included


def _linear(torch: str, jax_path: str, bias: bool = True) -> list[Rule]:
    rules = [Rule(f"{torch}.weight", f"{jax_path}.kernel", LINEAR)]
    if bias:
        rules.append(Rule(f"{torch}.bias", f"{jax_path}.bias"))
    return rules


def _block_rules() -> list[Rule]:
    t, j = "transformer_blocks.{i}", "blocks"
    rules = [Rule(f"{t}.scale_shift_table", f"{j}.scale_shift_table")]
    for attn in ("attn1", "attn2"):
        for proj in ("to_q", "to_k", "to_v"):
            rules += _linear(f"{t}.{attn}.{proj}", f"{j}.{attn}.{proj}")  # attn1 biases only if attention_bias
        rules += _linear(f"{t}.{attn}.to_out.0", f"{j}.{attn}.to_out")
        rules += [Rule(f"{t}.{attn}.norm_q.weight", f"{j}.{attn}.norm_q.weight"),
                  Rule(f"{t}.{attn}.norm_k.weight", f"{j}.{attn}.norm_k.weight")]
    rules += [
        Rule(f"{t}.ff.conv_inverted.weight", f"{j}.ff.conv_inverted.kernel", CONV1X1),
        Rule(f"{t}.ff.conv_inverted.bias", f"{j}.ff.conv_inverted.bias"),
        Rule(f"{t}.ff.conv_depth.weight", f"{j}.ff.conv_depth_kernel", DEPTHWISE2D),
        Rule(f"{t}.ff.conv_depth.bias", f"{j}.ff.conv_depth_bias"),
        Rule(f"{t}.ff.conv_point.weight", f"{j}.ff.conv_point.kernel", CONV1X1),
        Rule(f"{t}.ff.conv_temp.weight", f"{j}.ff.conv_temp", TEMPORAL),
    ]
    return rules


#: diffusers ``SanaVideoTransformer3DModel`` state dict → JAX parameters.
DIFFUSERS_RULES: list[Rule] = [
    Rule("patch_embedding.weight", "patch_embedding_kernel", CONV3D),
    Rule("patch_embedding.bias", "patch_embedding_bias"),
    *_linear("time_embed.emb.timestep_embedder.linear_1", "time_embed.timestep_embedder.linear_1"),
    *_linear("time_embed.emb.timestep_embedder.linear_2", "time_embed.timestep_embedder.linear_2"),
    *_linear("time_embed.linear", "time_embed.linear"),
    *_linear("caption_projection.linear_1", "caption_projection.linear_1"),
    *_linear("caption_projection.linear_2", "caption_projection.linear_2"),
    Rule("caption_norm.weight", "caption_norm.weight", IDENTITY),
    Rule("scale_shift_table", "scale_shift_table"),
    *_linear("proj_out", "proj_out"),
    *_block_rules(),
]


def _pair(src: str, dst: str) -> list[Rename]:
    return [Rename(f"{src}.weight", f"{dst}.weight"), Rename(f"{src}.bias", f"{dst}.bias")]


def _split(src: str, dsts: tuple[str, ...]) -> list[Rename]:
    return [Rename(f"{src}.{p}", f"{d}.{p}", parts=len(dsts), index=k)
            for p in ("weight", "bias") for k, d in enumerate(dsts)]


_B, _T = "blocks.{i}", "transformer_blocks.{i}"

#: original Sana ``.pth`` (``torch.load(f)["state_dict"]``) names → diffusers names
#: (``huggingface/diffusers:scripts/convert_sana_video_to_diffusers.py``).
ORIGINAL_RENAMES: list[Rename] = [
    *_pair("x_embedder.proj", "patch_embedding"),
    *_pair("y_embedder.y_proj.fc1", "caption_projection.linear_1"),
    *_pair("y_embedder.y_proj.fc2", "caption_projection.linear_2"),
    *_pair("t_embedder.mlp.0", "time_embed.emb.timestep_embedder.linear_1"),
    *_pair("t_embedder.mlp.2", "time_embed.emb.timestep_embedder.linear_2"),
    *_pair("t_block.1", "time_embed.linear"),
    Rename("attention_y_norm.weight", "caption_norm.weight"),
    Rename(f"{_B}.scale_shift_table", f"{_T}.scale_shift_table"),
    *_split(f"{_B}.attn.qkv", (f"{_T}.attn1.to_q", f"{_T}.attn1.to_k", f"{_T}.attn1.to_v")),
    Rename(f"{_B}.attn.q_norm.weight", f"{_T}.attn1.norm_q.weight"),
    Rename(f"{_B}.attn.k_norm.weight", f"{_T}.attn1.norm_k.weight"),
    *_pair(f"{_B}.attn.proj", f"{_T}.attn1.to_out.0"),
    *_pair(f"{_B}.cross_attn.q_linear", f"{_T}.attn2.to_q"),
    *_split(f"{_B}.cross_attn.kv_linear", (f"{_T}.attn2.to_k", f"{_T}.attn2.to_v")),
    Rename(f"{_B}.cross_attn.q_norm.weight", f"{_T}.attn2.norm_q.weight"),
    Rename(f"{_B}.cross_attn.k_norm.weight", f"{_T}.attn2.norm_k.weight"),
    *_pair(f"{_B}.cross_attn.proj", f"{_T}.attn2.to_out.0"),
    *_pair(f"{_B}.mlp.inverted_conv.conv", f"{_T}.ff.conv_inverted"),
    *_pair(f"{_B}.mlp.depth_conv.conv", f"{_T}.ff.conv_depth"),
    Rename(f"{_B}.mlp.point_conv.conv.weight", f"{_T}.ff.conv_point.weight"),
    Rename(f"{_B}.mlp.t_conv.weight", f"{_T}.ff.conv_temp.weight"),
    *_pair("final_layer.linear", "proj_out"),
    Rename("final_layer.scale_shift_table", "scale_shift_table"),
    # training-only tensors, dropped by the official conversion: the learned null caption, position tables, logvar
    Rename("y_embedder.y_embedding", None),
    Rename("pos_embed", None),
    Rename("logvar_linear.weight", None),
    Rename("logvar_linear.bias", None),
]


def is_diffusers_layout(keys) -> bool:
    keys = set(keys)
    return "patch_embedding.weight" in keys and "transformer_blocks.0.attn1.to_q.weight" in keys


def is_original_layout(keys) -> bool:
    keys = set(keys)
    return "x_embedder.proj.weight" in keys and "blocks.0.attn.qkv.weight" in keys


def as_diffusers(source: Mapping, where: str) -> Mapping:
    """The checkpoint under diffusers names, whichever of the two layouts it is in."""
    if is_original_layout(source):
        return tables.RenamedSource(source, ORIGINAL_RENAMES, where)
    if is_diffusers_layout(source):
        return source
    raise CheckpointError(f"{where}: not a SANA-Video transformer checkpoint (found neither "
                          "'patch_embedding.weight' (diffusers) nor 'x_embedder.proj.weight' (original Sana))")


def detect(keys) -> bool:
    return is_diffusers_layout(keys) or is_original_layout(keys)


def config_from_checkpoint(source: Mapping, where: str) -> SanaVideoConfig:
    """No config.json: infer it from the tensor shapes (either layout)."""
    return config_from_shapes(as_diffusers(source, where), where)


def config_from_shapes(source: Mapping, where: str, head_dim: int = 112) -> SanaVideoConfig:
    """Infer the configuration from tensor shapes (diffusers names). Head count is not visible in the shapes:
    the released models use 112-channel heads, which is assumed unless ``head_dim`` says otherwise."""
    shape = source.shape if hasattr(source, "shape") else (lambda n: np.shape(source[n]))
    d, c_in, pt, ph, pw = shape("patch_embedding.weight")
    if d % head_dim:
        raise ConfigError(f"{where}: width {d} is not a multiple of head_dim {head_dim}; pass the model's "
                          "config.json (converters.load(path, config=...))")
    layers = 1 + max(int(k.split(".")[1]) for k in source if k.startswith("transformer_blocks."))
    hidden2 = shape("transformer_blocks.0.ff.conv_inverted.weight")[0]
    out = shape("proj_out.weight")[0] // (pt * ph * pw)
    return SanaVideoConfig(
        in_channels=c_in, out_channels=out, num_attention_heads=d // head_dim, attention_head_dim=head_dim,
        num_layers=layers, num_cross_attention_heads=d // head_dim, cross_attention_head_dim=head_dim,
        cross_attention_dim=d, caption_channels=shape("caption_projection.linear_1.weight")[1],
        mlp_ratio=hidden2 / 2 / d, attention_bias="transformer_blocks.0.attn1.to_q.bias" in source,
        sample_size=30 if ph == 2 else 22, patch_size=(pt, ph, pw),
        qk_norm="rms_norm_across_heads" if "transformer_blocks.0.attn1.norm_q.weight" in source else None)


def abstract(config: SanaVideoConfig, dtype=jnp.float32):
    """``(graphdef, abstract_state, targets)`` of a model with ``config``; allocates nothing."""
    return abstract_model(lambda: build_transformer(config, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0)))


def load(source: Mapping, config: SanaVideoConfig, *, where: str, dtype=None, progress=None) -> SanaVideoTransformer:
    """Build a :class:`SanaVideoTransformer` (a ``PreconditionedTransformer`` for a :class:`PreconditionedConfig`)
    from a checkpoint in either layout; every key must be consumed."""
    source = as_diffusers(source, where)
    return tables.load_module(DIFFUSERS_RULES, abstract, config, source, where=where, dtype=dtype,
                              dtype_key="patch_embedding.weight",
                              progress=progress)


def expected_tensors(config: SanaVideoConfig) -> dict[str, tuple[int, ...]]:
    """diffusers state-dict names and shapes of a model with ``config`` (no memory allocated)."""
    return tables.expected_tensors(DIFFUSERS_RULES, abstract(config)[2])


def export(model: SanaVideoTransformer) -> dict[str, np.ndarray]:
    """The model's parameters as a diffusers ``SanaVideoTransformer3DModel`` state dict (numpy)."""
    return tables.export_tensors(DIFFUSERS_RULES, {k: np.asarray(v) for k, v in flat_params(model).items()})

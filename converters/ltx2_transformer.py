"""LTX-2 transformer checkpoints: diffusers ``transformer/`` folders (``LTX2VideoTransformer3DModel``) and the native
LTX-2 single file (``model.diffusion_model.*`` beside ``vae.*``, connectors …), plus LoRA fusion while streaming.

Renames after ``huggingface/diffusers:scripts/convert_ltx2_to_diffusers.py``: the native names are presented
under diffusers names by prefix renames, so one table maps both layouts onto the JAX parameters. A video-only
configuration (or a checkpoint without audio weights) skips the audio and a↔v tensors without reading them.

LoRA (:func:`fuse_lora`): ``W += strength · scale · B @ A`` is computed when the loader reads ``W`` — there is never a
second copy of the weights. Accepted names (after dropping a ``diffusion_model.`` / ``transformer.`` /
``base_model.model.`` prefix): ``<module>.lora_A.weight`` + ``<module>.lora_B.weight`` (ltx-core, diffusers/peft;
``scale = 1`` as in ltx-core's ``fuse_loras``, or ``lora_alpha / r`` from diffusers' ``lora_adapter_metadata``) and
``<module>.lora_down.weight`` + ``<module>.lora_up.weight`` (+ ``<module>.alpha``: ``scale = alpha / rank``).
``<module>`` may use native or diffusers names. Keys for the text connectors (``text_embedding_projection.*``,
``*_embeddings_connector.*``, ``connectors.*``) are left out (listed in ``LoraFusedSource.skipped``).
"""

from __future__ import annotations

import dataclasses
import json
import re
import warnings
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from converters import tables
from converters.nnx_state import abstract_model, flatten, merge
from converters.tables import LINEAR, Rename, Rule
from sana_jax.errors import CheckpointError, ConfigError
from sana_jax.models.ltx2_transformer import DIFFUSERS_CLASS, LTX2Transformer, LTX2TransformerConfig

FAMILY = "ltx2_transformer"
CONFIG = LTX2TransformerConfig
MODEL_CLASS_NAME = DIFFUSERS_CLASS
MODEL = LTX2Transformer
NATIVE_PREFIX = "model.diffusion_model."

_ADALN = {"time_embed": "adaln_single", "audio_time_embed": "audio_adaln_single",
          "av_cross_attn_video_scale_shift": "av_ca_video_scale_shift_adaln_single",
          "av_cross_attn_audio_scale_shift": "av_ca_audio_scale_shift_adaln_single",
          "av_cross_attn_video_a2v_gate": "av_ca_a2v_gate_adaln_single",
          "av_cross_attn_audio_v2a_gate": "av_ca_v2a_gate_adaln_single"}
_VIDEO_ATTN = ("attn1", "attn2")
_AUDIO_ATTN = ("audio_attn1", "audio_attn2", "audio_to_video_attn", "video_to_audio_attn")
# top-level names of the transformer in diffusers layout (to pick its keys out of an all-in-one file)
_TOP = ("proj_in.", "audio_proj_in.", "caption_projection.", "audio_caption_projection.", "time_embed.",
        "audio_time_embed.", "av_cross_attn_", "scale_shift_table", "audio_scale_shift_table", "proj_out.",
        "audio_proj_out.", "transformer_blocks.")


def _linear(torch: str, jax_path: str) -> list[Rule]:
    return [Rule(f"{torch}.weight", f"{jax_path}.kernel", LINEAR), Rule(f"{torch}.bias", f"{jax_path}.bias")]


def _attention(torch: str, jax_path: str) -> list[Rule]:
    rules = [r for p in ("to_q", "to_k", "to_v") for r in _linear(f"{torch}.{p}", f"{jax_path}.{p}")]
    rules += _linear(f"{torch}.to_out.0", f"{jax_path}.to_out")
    return rules + [Rule(f"{torch}.norm_q.weight", f"{jax_path}.norm_q.weight"),
                    Rule(f"{torch}.norm_k.weight", f"{jax_path}.norm_k.weight")]


def _adaln(torch: str, jax_path: str) -> list[Rule]:
    return (_linear(f"{torch}.emb.timestep_embedder.linear_1", f"{jax_path}.timestep_embedder.linear_1")
            + _linear(f"{torch}.emb.timestep_embedder.linear_2", f"{jax_path}.timestep_embedder.linear_2")
            + _linear(f"{torch}.linear", f"{jax_path}.linear"))


def _ff(torch: str, jax_path: str) -> list[Rule]:
    return _linear(f"{torch}.net.0.proj", f"{jax_path}.proj_in") + _linear(f"{torch}.net.2", f"{jax_path}.proj_out")


def diffusers_rules(cfg: LTX2TransformerConfig) -> list[Rule]:
    """diffusers ``LTX2VideoTransformer3DModel`` state dict → JAX parameter paths (video-only: video part only)."""
    t = "transformer_blocks.{i}"
    rules = [*_linear("proj_in", "proj_in"), *_linear("proj_out", "proj_out"),
             *_linear("caption_projection.linear_1", "caption_projection.linear_1"),
             *_linear("caption_projection.linear_2", "caption_projection.linear_2"),
             *_adaln("time_embed", "time_embed"), Rule("scale_shift_table", "scale_shift_table"),
             Rule(f"{t}.scale_shift_table", "blocks.scale_shift_table"), *_ff(f"{t}.ff", "blocks.ff")]
    rules += [r for a in _VIDEO_ATTN for r in _attention(f"{t}.{a}", f"blocks.{a}")]
    if cfg.video_only:
        return rules
    rules += [*_linear("audio_proj_in", "audio_proj_in"), *_linear("audio_proj_out", "audio_proj_out"),
              *_linear("audio_caption_projection.linear_1", "audio_caption_projection.linear_1"),
              *_linear("audio_caption_projection.linear_2", "audio_caption_projection.linear_2"),
              Rule("audio_scale_shift_table", "audio_scale_shift_table"),
              Rule(f"{t}.audio_scale_shift_table", "blocks.audio_scale_shift_table"),
              Rule(f"{t}.video_a2v_cross_attn_scale_shift_table", "blocks.video_a2v_cross_attn_scale_shift_table"),
              Rule(f"{t}.audio_a2v_cross_attn_scale_shift_table", "blocks.audio_a2v_cross_attn_scale_shift_table"),
              *_ff(f"{t}.audio_ff", "blocks.audio_ff")]
    rules += [r for name in _ADALN if name != "time_embed" for r in _adaln(name, name)]
    rules += [r for a in _AUDIO_ATTN for r in _attention(f"{t}.{a}", f"blocks.{a}")]
    return rules


def is_audio_key(name: str) -> bool:
    """Whether a diffusers-layout key belongs to the audio stream or the a↔v attention (dropped by video-only)."""
    tail = name.split(".", 2)[2] if name.startswith("transformer_blocks.") else name
    return tail.startswith(("audio_", "av_cross_attn_", "video_to_audio_attn.", "video_a2v_cross_attn"))


def native_renames(prefix: str = NATIVE_PREFIX) -> list[Rename]:
    """Native ltx-core names → diffusers names (``dit_native_to_diffusers_renames.txt``, as renames)."""
    p, b = prefix, f"{prefix}transformer_blocks.{{i}}."
    renames = [Rename(f"{p}patchify_proj.", "proj_in.", prefix=True),
               Rename(f"{p}audio_patchify_proj.", "audio_proj_in.", prefix=True),
               Rename(f"{p}scale_shift_table", "scale_shift_table"),
               Rename(f"{p}audio_scale_shift_table", "audio_scale_shift_table"),
               Rename(f"{b}scale_shift_table_a2v_ca_video",
                      "transformer_blocks.{i}.video_a2v_cross_attn_scale_shift_table"),
               Rename(f"{b}scale_shift_table_a2v_ca_audio",
                      "transformer_blocks.{i}.audio_a2v_cross_attn_scale_shift_table")]
    renames += [Rename(f"{p}{native}.", f"{ours}.", prefix=True) for ours, native in _ADALN.items()]
    for attn in _VIDEO_ATTN + _AUDIO_ATTN:
        for q in ("q", "k"):
            renames.append(Rename(f"{b}{attn}.{q}_norm.weight", f"transformer_blocks.{{i}}.{attn}.norm_{q}.weight"))
    for name in ("caption_projection.", "audio_caption_projection.", "proj_out.", "audio_proj_out.",
                 "transformer_blocks."):
        renames.append(Rename(f"{p}{name}", name, prefix=True))
    return renames


def is_diffusers_layout(keys) -> bool:
    keys = set(keys)
    return {"proj_in.weight", "audio_proj_in.weight", "time_embed.linear.weight"} <= keys


def is_native_layout(keys, prefix: str = NATIVE_PREFIX) -> bool:
    keys = set(keys)
    return {f"{prefix}patchify_proj.weight", f"{prefix}audio_patchify_proj.weight"} <= keys


def detect(keys) -> bool:
    """Audio/video LTX-2 transformers only: a video-only file is told apart from LTX-Video by its config.json."""
    return is_diffusers_layout(keys) or is_native_layout(keys)


def config_from_checkpoint(source: Mapping, where: str) -> LTX2TransformerConfig:
    """Native files carry ltx-core's config in their safetensors metadata (``config`` JSON, ``transformer`` key);
    without it the released LTX-2.0 configuration is assumed (shapes are checked when loading)."""
    if not is_native_layout(source):
        raise ConfigError(f"{where}: a diffusers-layout LTX-2 transformer file needs its config.json beside it or "
                          "config=")
    raw = getattr(source, "metadata", {}) or {}
    if "config" not in raw:
        return LTX2TransformerConfig.preset("ltx-2.0")
    try:
        config = json.loads(raw["config"])
    except (TypeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{where}: the safetensors metadata 'config' is not JSON ({e})") from e
    if "transformer" not in config:
        return LTX2TransformerConfig.preset("ltx-2.0")
    return LTX2TransformerConfig.from_native(config["transformer"], f"{where} metadata")


def as_diffusers(source: Mapping, where: str) -> Mapping:
    """The transformer's tensors of ``source`` under diffusers names (other models' tensors left out)."""
    if is_native_layout(source):
        renamed = tables.RenamedSource(source, native_renames(), where)
        # keep the transformer's keys; an unmapped model.diffusion_model.* key (not a text connector) stays in so
        # that it is reported as unexpected
        keep = [k for k in renamed if k.startswith(_TOP)
                or (k.startswith(NATIVE_PREFIX) and "_embeddings_connector." not in k)]
        return tables.Subset(renamed, keep)
    if is_diffusers_layout(source) or any(k.startswith("transformer_blocks.") for k in source):
        return source
    raise CheckpointError(f"{where}: not an LTX-2 transformer checkpoint (no 'proj_in.weight' or "
                          f"'{NATIVE_PREFIX}patchify_proj.weight')")


def abstract(config: LTX2TransformerConfig, dtype=jnp.float32):
    return abstract_model(lambda: LTX2Transformer(config, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0)))


def load(source: Mapping, config: LTX2TransformerConfig, *, where: str, dtype=None, progress=None,
         loras: Sequence[tuple[Mapping, float]] = (), video_only: bool | None = None) -> LTX2Transformer:
    """Build an :class:`LTX2Transformer` from a checkpoint in either layout.

    Args:
      loras: ``(lora_source, strength)`` pairs fused into the weights while they stream (:func:`fuse_lora`); LoRA
        tensors for the text connectors are left out with a warning.
      video_only: build without the audio stream and a↔v attention (their tensors are skipped unread). Default:
        the config's ``video_only``, or True when the checkpoint has no audio tensors at all.
    """
    source = as_diffusers(source, where)
    if video_only is None:
        video_only = config.video_only or not any(is_audio_key(k) for k in source)
    if video_only != config.video_only:
        config = dataclasses.replace(config, video_only=video_only)
    for lora, strength in loras:
        source = fuse_lora(source, lora, strength, where=f"{where} + LoRA")
        if source.skipped:
            warnings.warn(f"{where} + LoRA: {len(source.skipped)} LoRA tensors target the text connectors; only the "
                          "transformer's are fused (the connectors are loaded without LoRA)", stacklevel=2)
    dtype = jnp.dtype(dtype) if dtype is not None else tables.checkpoint_dtype(source, "proj_in.weight")
    graphdef, state, targets = abstract(config, dtype)
    rules = diffusers_rules(config)
    ignore = is_audio_key if config.video_only else (lambda _: False)
    if progress is not None:
        progress.reset(total=tables.count_tensors(rules, source, ignore))
    flat = tables.load_params(rules, targets, source, where, place=lambda _p, a: jax.device_put(a),
                              ignore=ignore, progress=progress)
    return merge(graphdef, state, flat)


def expected_tensors(config: LTX2TransformerConfig) -> dict[str, tuple[int, ...]]:
    return tables.expected_tensors(diffusers_rules(config), abstract(config)[2])


def export(model: LTX2Transformer) -> dict[str, np.ndarray]:
    state = flatten(nnx.to_pure_dict(nnx.state(model)))
    return tables.export_tensors(diffusers_rules(model.config), {k: np.asarray(v) for k, v in state.items()})


# -- LoRA ---------------------------------------------------------------------------------------------------------

_OTHER_MODELS = ("text_embedding_projection.", "connectors.")
_LORA_PREFIXES = ("base_model.model.", "diffusion_model.", "transformer.", NATIVE_PREFIX)
_LORA_KEY = re.compile(r"(?P<module>.+)\.(?P<kind>lora_A\.weight|lora_B\.weight|lora_down\.weight|lora_up\.weight"
                       r"|alpha)\Z")


def _strip(name: str) -> str:
    for p in _LORA_PREFIXES:
        if name.startswith(p):
            return name[len(p):]
    return name


def _peft_scales(metadata: Mapping[str, str], where: str):
    """``module -> lora_alpha / r`` from diffusers' ``lora_adapter_metadata`` (peft ``LoraConfig``), or None."""
    raw = (metadata or {}).get("lora_adapter_metadata")
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
    except (TypeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{where}: lora_adapter_metadata is not JSON ({e})") from e
    r, alpha = meta.get("r", 8), meta.get("lora_alpha", meta.get("r", 8))
    ranks, alphas = meta.get("rank_pattern") or {}, meta.get("alpha_pattern") or {}

    def lookup(pattern: Mapping, module: str, default):
        for key, value in pattern.items():  # peft: re.match(rf"(.*\.)?({key})$", module)
            if re.match(rf"(.*\.)?({key})$", module):
                return value
        return default

    return lambda module: lookup(alphas, module, alpha) / lookup(ranks, module, r)


class LoraFusedSource(Mapping):
    """``source`` with every LoRA-targeted weight read as ``W + s·B@A`` (float32 sum, cast back to W's dtype).

    Names, shapes and dtypes are those of ``source``; nothing is computed until a tensor is read."""

    def __init__(self, source: Mapping, lora: Mapping, strength: float, where: str):
        self.source, self.lora, self.where = source, lora, where
        modules: dict[str, dict[str, str]] = {}
        unknown = []
        #: LoRA keys for the text connectors (not this model's), left for the connectors' loader
        self.skipped = [n for n in lora if n.startswith(_OTHER_MODELS) or "_embeddings_connector." in n]
        for name in lora:
            if name in self.skipped:
                continue
            m = _LORA_KEY.match(_strip(name))
            if m is None:
                unknown.append(name)
            else:
                modules.setdefault(m["module"], {})[m["kind"].split(".")[0]] = name
        if unknown:
            raise CheckpointError(f"{where}: {len(unknown)} LoRA keys are neither lora_A/lora_B, lora_down/lora_up "
                                  f"nor alpha: {tables._fmt(unknown)}")
        peft = _peft_scales(getattr(lora, "metadata", {}), where)
        resolve = _resolver(source)
        self.deltas: dict[str, tuple[str, str, float]] = {}
        problems = []
        for module, parts in sorted(modules.items()):
            down = parts.get("lora_A", parts.get("lora_down"))
            up = parts.get("lora_B", parts.get("lora_up"))
            if down is None or up is None:
                problems.append(f"{module}: needs both the down (A) and up (B) matrices, has {sorted(parts)}")
                continue
            target = resolve(f"{module}.weight")
            if target is None:
                problems.append(f"{module}: no weight '{module}.weight' in the checkpoint")
                continue
            a_shape, b_shape = tables._shape_of(lora, down), tables._shape_of(lora, up)
            w_shape = tables._shape_of(source, target)
            if (len(a_shape) != 2 or len(b_shape) != 2 or a_shape[0] != b_shape[1]
                    or (b_shape[0], a_shape[1]) != tuple(w_shape)):
                problems.append(f"{module}: A {a_shape} / B {b_shape} do not make a delta of {target} {w_shape}")
                continue
            rank = a_shape[0]
            if "alpha" in parts:
                scale = float(np.asarray(lora[parts["alpha"]])) / rank
            elif peft is not None:
                scale = float(peft(module))
            else:
                scale = 1.0  # ltx-core fuse_loras: W += strength · B @ A
            if target in self.deltas:
                problems.append(f"{module}: a second LoRA module also targets {target}")
                continue
            self.deltas[target] = (down, up, float(strength) * scale)
        if problems:
            raise CheckpointError(f"{where}: LoRA does not fit the checkpoint — " + "; ".join(problems[:8])
                                  + (f" … and {len(problems) - 8} more" if len(problems) > 8 else ""))

    def __getitem__(self, name: str) -> np.ndarray:
        w = self.source[name]
        if name not in self.deltas:
            return w
        down, up, scale = self.deltas[name]
        a = np.asarray(self.lora[down], np.float32)
        b = np.asarray(self.lora[up], np.float32)
        w = np.asarray(w)
        return (w.astype(np.float32) + np.float32(scale) * (b @ a)).astype(w.dtype)

    def read_slice(self, name: str, index: tuple[slice, ...]) -> np.ndarray:
        """``self[name][index]`` reading only that block of ``W`` (sharded loading): for a 2-D ``W`` (out, in),
        ``(W + s·B@A)[rows, cols] = W[rows, cols] + s·B[rows] @ A[:, cols]``, so only B's rows and A's columns
        are needed besides the block itself."""
        w = tables.read_slice(self.source, name, index)
        if name not in self.deltas:
            return w
        down, up, scale = self.deltas[name]
        rows = index[0] if len(index) > 0 else slice(None)
        cols = index[1] if len(index) > 1 else slice(None)
        a = tables.read_slice(self.lora, down, (slice(None), cols)).astype(np.float32)
        b = tables.read_slice(self.lora, up, (rows, slice(None))).astype(np.float32)
        return (w.astype(np.float32) + np.float32(scale) * (b @ a)).astype(w.dtype)

    def quantization(self, name: str):
        """The source's 8-bit storage of an untouched weight (a fused one is new values: None)."""
        return None if name in self.deltas else tables.quantization(self.source, name)

    def shape(self, name: str) -> tuple[int, ...]:
        return tables._shape_of(self.source, name)

    def dtype(self, name: str) -> np.dtype:
        if hasattr(self.source, "dtype") and callable(self.source.dtype):
            return self.source.dtype(name)
        return np.asarray(self.source[name]).dtype

    def __iter__(self):
        return iter(self.source)

    def __len__(self) -> int:
        return len(self.source)


def _resolver(source: Mapping):
    """LoRA target name (native or diffusers, prefixes stripped) → the name it has in ``source``, or None."""
    names = set(source)
    renames = native_renames(prefix="")

    def resolve(target: str):
        for candidate in (target, NATIVE_PREFIX + target):
            if candidate in names:
                return candidate
        renamed = list(tables.RenamedSource({target: None}, renames, "LoRA"))[0]
        for candidate in (renamed, NATIVE_PREFIX + renamed):
            if candidate in names:
                return candidate
        return None

    return resolve


def fuse_lora(source: Mapping, lora_source: Mapping, strength: float = 1.0, *, where: str = "LoRA") -> Mapping:
    """``source`` with the LoRA ``lora_source`` fused in lazily (see the module docstring for accepted names).

    Raises :class:`CheckpointError` when a LoRA module has no matching weight, mismatched shapes, or unknown keys —
    a LoRA is never applied partially."""
    return LoraFusedSource(source, lora_source, strength, where)

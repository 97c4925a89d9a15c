"""LTX-2 prompt encoding (diffusers ``LTX2Pipeline._get_gemma_prompt_embeds`` + ``connectors`` in
``huggingface/diffusers:src/diffusers/pipelines/ltx2/pipeline_ltx2.py``; ltx-core
``Lightricks/LTX-2:packages/ltx-core/src/ltx_core/text_encoders/gemma/``): the text side of SANA-Video's stage-2
refiner.

1. Each prompt is stripped and tokenised with **left** padding to ``max_length`` (1024) tokens, truncated on the
   right (the Gemma tokenizer's ``<bos>`` included).
2. Gemma-3 runs over the padded batch; **all** its hidden states (embeddings + every layer, the last one after the
   final norm: 49 for Gemma-3-12B) are stacked on a trailing axis → (B, T, D, layers).
3. ``LTX2TextConnectors`` turn them into the video and audio caption embeddings (feature extractor, registers,
   connector blocks) and the mask the DiT's cross-attention gets (all ones once registers fill the padding).

Plain functions; :func:`prompt_encoder` jits steps 2–3 once for a (Gemma, connectors) pair.

    encode = prompt_encoder(gemma, connectors)
    emb = encode_prompt(["a cat surfing"], tokenizer, encode)      # LTX2TextEmbeddings(video, audio, mask)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sana_jax.errors import InputError

#: diffusers ``LTX2Pipeline(max_sequence_length=1024)``; ltx-core pads Gemma-3 prompts to 1024 tokens as well.
DEFAULT_MAX_LENGTH = 1024
PADDING_SIDE = "left"


class LTX2TextEmbeddings(NamedTuple):
    """The refiner's text condition: ``video`` / ``audio`` (B, T, caption_channels) connector outputs and their
    ``mask`` (B, T) (what diffusers passes as ``encoder_attention_mask`` / ``audio_encoder_attention_mask``)."""

    video: jax.Array
    audio: jax.Array
    mask: jax.Array


# (ids (B, T) int32, mask (B, T) int32) -> LTX2TextEmbeddings
EncodeFn = Callable[[np.ndarray, np.ndarray], LTX2TextEmbeddings]


def preprocess(prompts: str | Sequence[str]) -> list[str]:
    """``[p.strip() for p in prompts]`` (diffusers and ltx-core strip; no template, no casing change)."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise InputError(f"prompts must be a non-empty list of strings, got {prompts!r}")
    return [p.strip() for p in prompts]


def tokenize(tokenizer, prompts: str | Sequence[str], max_length: int = DEFAULT_MAX_LENGTH
             ) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, mask)`` int32 (B, max_length), left-padded (``sana_jax.text.tokenizer.Tokenizer``)."""
    return tokenizer.encode(preprocess(prompts), max_length=max_length, padding_side=PADDING_SIDE)


def stack_hidden_states(hidden_states: Sequence[jax.Array]) -> jax.Array:
    """transformers' tuple of (B, T, D) hidden states → (B, T, D, layers) (``torch.stack(…, dim=-1)``)."""
    return jnp.stack(list(hidden_states), axis=-1)


def gemma_hidden_states(text_encoder, ids, mask) -> jax.Array:
    """All hidden states of the Gemma decoder, stacked: (B, T, D, num_hidden_layers + 1)."""
    _, hidden = text_encoder(ids, mask, output_hidden_states=True)
    return stack_hidden_states(hidden)


def prompt_embeddings(text_encoder, connectors, ids, mask, padding_side: str = PADDING_SIDE
                      ) -> LTX2TextEmbeddings:
    """Gemma-3 (all hidden states) → connectors, on already tokenised input. Pure in the modules' parameters."""
    hidden = gemma_hidden_states(text_encoder, ids, mask)
    if hidden.shape[-1] != connectors.config.text_proj_in_factor:
        raise InputError(f"the text encoder gives {hidden.shape[-1]} hidden states, the connectors expect "
                         f"{connectors.config.text_proj_in_factor} (text_proj_in_factor): mismatched checkpoints")
    if hidden.shape[2] != connectors.config.caption_channels:
        raise InputError(f"the text encoder width {hidden.shape[2]} differs from the connectors' caption_channels "
                         f"{connectors.config.caption_channels}: mismatched checkpoints")
    video, audio, out_mask = connectors(hidden, mask, padding_side)
    return LTX2TextEmbeddings(video, audio, out_mask)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _encode_jit(t_graph, c_graph, padding_side, t_params, c_params, ids, mask):
    return prompt_embeddings(nnx.merge(t_graph, t_params), nnx.merge(c_graph, c_params), ids, mask, padding_side)


def prompt_encoder(text_encoder, connectors, padding_side: str = PADDING_SIDE) -> EncodeFn:
    """A jitted ``(ids, mask) -> LTX2TextEmbeddings`` for this Gemma and these connectors. The modules are split
    once; the compiled function is keyed by their structure and the batch shape, so pipelines built from the same
    configuration share it."""
    t_graph, t_params = nnx.split(text_encoder)
    c_graph, c_params = nnx.split(connectors)
    return lambda ids, mask: _encode_jit(t_graph, c_graph, padding_side, t_params, c_params, jnp.asarray(ids),
                                         jnp.asarray(mask))


def encode_prompt(prompts: str | Sequence[str], tokenizer, encode: EncodeFn, *,
                  max_length: int = DEFAULT_MAX_LENGTH) -> LTX2TextEmbeddings:
    """Prompts → the refiner's text embeddings (``encode`` from :func:`prompt_encoder`)."""
    ids, mask = tokenize(tokenizer, prompts, max_length)
    return encode(ids, mask)


__all__ = ["DEFAULT_MAX_LENGTH", "LTX2TextEmbeddings", "encode_prompt", "gemma_hidden_states", "preprocess",
           "prompt_embeddings", "prompt_encoder", "stack_hidden_states", "tokenize"]

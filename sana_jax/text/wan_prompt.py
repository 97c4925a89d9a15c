"""Wan2.1 prompt encoding with UMT5-XXL (diffusers ``WanPipeline._get_t5_prompt_embeds`` and ``prompt_clean`` in
``huggingface/diffusers:src/diffusers/pipelines/wan/pipeline_wan.py``; the original ``T5EncoderModel.__call__`` and
``HuggingfaceTokenizer`` in ``Wan-Video/Wan2.1:wan/modules/t5.py`` / ``wan/modules/tokenizers.py``).

1. Each prompt is cleaned (:func:`prompt_clean`): ``ftfy.fix_text`` when ftfy is installed (diffusers skips it
   otherwise; it is no dependency here), ``html.unescape`` twice, strip, every whitespace run → one space, strip.
2. It is tokenised with right padding to ``max_sequence_length`` (512) tokens, truncated, the tokenizer's ``</s>``
   (id 1) appended by its ``tokenizer.json`` post-processor; pad id 0 (``sana_jax.text.tokenizer.Tokenizer``).
3. UMT5 runs with the attention mask; with ``seq_len = mask.sum()`` (``</s>`` included) the rows ``≥ seq_len``
   are set to **exactly zero** (diffusers trims and pads with zeros; Wan returns the trimmed list and its DiT pads
   with zeros; CausVid / Self-Forcing zero them in place).

Plain functions; :func:`prompt_encoder` jits step 3 once for a text encoder::

    encode = prompt_encoder(umt5)
    context = encode_wan_prompts(["a cat surfing"], tokenizer, encode)       # (1, 512, 4096)
    negative = encode_wan_prompts([WAN_NEGATIVE_PROMPT], tokenizer, encode)
"""

from __future__ import annotations

import functools
import html
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sana_jax.errors import CheckpointError, InputError

try:  # diffusers and Wan use the ``regex`` module (its ``\s`` is Unicode White_Space); ``re`` differs only on
    import regex as _re  # the separators U+001C–U+001F
except ImportError:  # pragma: no cover - regex comes with transformers
    import re as _re

#: ``WanPipeline.__call__(max_sequence_length=512)``; Wan's ``text_len`` (``wan/configs/shared_config.py``).
DEFAULT_MAX_LENGTH = 512
#: Wan's ``sample_neg_prompt`` (``wan/configs/shared_config.py``), the default negative prompt of ``generate.py``.
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，"
    "多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，"
    "倒着走")

# (ids (B, L) int32, mask (B, L) int32) -> hidden states (B, L, D)
EncodeFn = Callable[[np.ndarray, np.ndarray], jax.Array]


def basic_clean(text: str) -> str:
    """``ftfy.fix_text`` (only when ftfy is importable), ``html.unescape`` twice, strip."""
    try:
        import ftfy
    except ImportError:
        pass
    else:
        text = ftfy.fix_text(text)
    return html.unescape(html.unescape(text)).strip()


def whitespace_clean(text: str) -> str:
    """Every whitespace run → one space, then strip."""
    return _re.sub(r"\s+", " ", text).strip()


def prompt_clean(text: str) -> str:
    """diffusers' / Wan's ``prompt_clean``: :func:`basic_clean`, then :func:`whitespace_clean`."""
    return whitespace_clean(basic_clean(text))


def preprocess(prompts: str | Sequence[str]) -> list[str]:
    """The cleaned prompts (a single string counts as one prompt)."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise InputError(f"prompts must be a non-empty list of strings, got {prompts!r}")
    return [prompt_clean(p) for p in prompts]


def tokenize(tokenizer, prompts: str | Sequence[str], max_length: int = DEFAULT_MAX_LENGTH
             ) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, mask)`` int32 (B, max_length) of the cleaned prompts: right padding, ``</s>`` kept on truncation.
    A tokenizer that does not end every prompt with its eos token (a ``tokenizer.json`` without T5's post-processor)
    is refused."""
    ids, mask = tokenizer.encode(preprocess(prompts), max_length=max_length, padding_side="right")
    last = ids[np.arange(len(ids)), np.maximum(mask.sum(axis=1) - 1, 0)]
    if tokenizer.eos_id is None or not (last == tokenizer.eos_id).all():
        raise CheckpointError(f"{tokenizer.folder}: the tokenizer does not append its eos token '</s>' (id 1) to "
                              "each prompt, as umt5-xxl's tokenizer.json does; is it the UMT5 tokenizer?")
    return ids, mask


def zero_padded(hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """``hidden`` (B, L, D) with rows ``≥ mask.sum()`` (per prompt) set to exactly zero."""
    seq_len = jnp.sum(jnp.asarray(mask) > 0, axis=1)
    rows = jnp.arange(hidden.shape[1])
    return jnp.where((rows[None, :] < seq_len[:, None])[..., None], hidden, jnp.zeros((), hidden.dtype))


def prompt_embeddings(text_encoder, ids, mask) -> jax.Array:
    """UMT5 on tokenised input, padded rows zeroed: (B, L, d_model). Pure in the module's parameters."""
    return zero_padded(text_encoder(ids, mask), mask)


@functools.partial(jax.jit, static_argnums=0)
def _encode_jit(graphdef, params, ids, mask):
    return prompt_embeddings(nnx.merge(graphdef, params), ids, mask)


def prompt_encoder(text_encoder) -> EncodeFn:
    """A jitted ``(ids, mask) -> (B, L, d_model)`` (:func:`prompt_embeddings`) for this UMT5 encoder. The module is
    split once; the compiled function is keyed by its structure and the batch shape."""
    graphdef, params = nnx.split(text_encoder)
    return lambda ids, mask: _encode_jit(graphdef, params, jnp.asarray(ids), jnp.asarray(mask))


def encode_wan_prompts(prompts: str | Sequence[str], tokenizer, encoder_fn: EncodeFn, max_sequence_length: int =
                       DEFAULT_MAX_LENGTH) -> jax.Array:
    """Prompts → Wan's text context (B, max_sequence_length, d_model), rows past each prompt's ``seq_len`` exactly
    zero. ``tokenizer``: a :class:`sana_jax.text.tokenizer.Tokenizer` of umt5-xxl; ``encoder_fn(ids, mask)``: the
    encoder's last hidden state (:func:`prompt_encoder`, or any function; the zeroing is applied here as well)."""
    ids, mask = tokenize(tokenizer, prompts, max_sequence_length)
    hidden = jnp.asarray(encoder_fn(ids, mask))
    if hidden.ndim != 3 or hidden.shape[:2] != ids.shape:
        raise InputError(f"encoder_fn must return (B, L, D) = ({ids.shape[0]}, {ids.shape[1]}, D), got "
                         f"{tuple(hidden.shape)}")
    return zero_padded(hidden, mask)


__all__ = ["DEFAULT_MAX_LENGTH", "WAN_NEGATIVE_PROMPT", "basic_clean", "encode_wan_prompts", "preprocess",
           "prompt_clean", "prompt_embeddings", "prompt_encoder", "tokenize", "whitespace_clean", "zero_padded"]

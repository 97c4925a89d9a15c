"""SANA-Video prompt encoding (diffusers ``SanaVideoPipeline.encode_prompt`` in
``huggingface/diffusers:src/diffusers/pipelines/sana_video/pipeline_sana_video.py``; the original
``NVlabs/Sana:inference_video_scripts/inference_sana_video.py``).

The prompt is preprocessed, prefixed with the *complex human instruction* (CHI), tokenised with right padding to
``len(tokens(CHI)) + 300 − 2`` tokens, run through Gemma-2 (last hidden state, after the final norm), and then
the BOS position plus the last 299 positions are kept, for the embeddings and the mask alike. The negative prompt
gets no CHI and is tokenised to 300 tokens.

Two styles exist and give different embeddings:

* ``"diffusers"``: the video CHI of ``SanaVideoPipeline.__call__``; prompts are lower-cased and stripped.
* ``"sana"``: the image CHI of NVlabs' yaml configs (``"Enhanced prompt"`` in double quotes); prompts are only
  stripped, case kept — as the official inference script.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from sana_jax.errors import InputError

DIFFUSERS_CHI = (
    "Given a user prompt, generate an 'Enhanced prompt' that provides detailed visual descriptions suitable for "
    "video generation. Evaluate the level of detail in the user prompt:",
    "- If the prompt is simple, focus on adding specifics about colors, shapes, sizes, textures, motion, and "
    "temporal relationships to create vivid and dynamic scenes.",
    "- If the prompt is already detailed, refine and enhance the existing details slightly without "
    "overcomplicating.",
    "Here are examples of how to transform or refine prompts:",
    "- User Prompt: A cat sleeping -> Enhanced: A small, fluffy white cat slowly settling into a curled position, "
    "peacefully falling asleep on a warm sunny windowsill, with gentle sunlight filtering through surrounding pots "
    "of blooming red flowers.",
    "- User Prompt: A busy city street -> Enhanced: A bustling city street scene at dusk, featuring glowing street "
    "lamps gradually lighting up, a diverse crowd of people in colorful clothing walking past, and a double-decker "
    "bus smoothly passing by towering glass skyscrapers.",
    "Please generate only the enhanced description for the prompt below and avoid including any additional "
    "commentary or evaluations:",
    "User Prompt: ",
)

SANA_CHI = (
    'Given a user prompt, generate an "Enhanced prompt" that provides detailed visual descriptions suitable for '
    "image generation. Evaluate the level of detail in the user prompt:",
    "- If the prompt is simple, focus on adding specifics about colors, shapes, sizes, textures, and spatial "
    "relationships to create vivid and concrete scenes.",
    "- If the prompt is already detailed, refine and enhance the existing details slightly without "
    "overcomplicating.",
    "Here are examples of how to transform or refine prompts:",
    "- User Prompt: A cat sleeping -> Enhanced: A small, fluffy white cat curled up in a round shape, sleeping "
    "peacefully on a warm sunny windowsill, surrounded by pots of blooming red flowers.",
    "- User Prompt: A busy city street -> Enhanced: A bustling city street scene at dusk, featuring glowing street "
    "lamps, a diverse crowd of people in colorful clothing, and a double-decker bus passing by towering glass "
    "skyscrapers.",
    "Please generate only the enhanced description for the prompt below and avoid including any additional "
    "commentary or evaluations:",
    "User Prompt: ",
)

DEFAULT_NEGATIVE_PROMPT = (
    "A chaotic sequence with misshapen, deformed limbs in heavy motion blur, sudden disappearance, jump cuts, jerky "
    "movements, rapid shot changes, frames out of sync, inconsistent character shapes, temporal artifacts, jitter, "
    "and ghosting effects, creating a disorienting visual experience.")

STYLES = {"diffusers": DIFFUSERS_CHI, "sana": SANA_CHI}

# (ids (B, L) int32, mask (B, L)) -> last hidden state (B, L, D)
TextEncoderFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def preprocess(prompt: str, style: str) -> str:
    return prompt.lower().strip() if style == "diffusers" else prompt.strip()


def with_motion_score(prompt: str, motion_score: int | None) -> str:
    """SANA-Video's motion conditioning: ``"… motion score: 30."`` appended to the prompt (docs use 30)."""
    return prompt if motion_score is None else f"{prompt.rstrip()} motion score: {int(motion_score)}."


def encode_sana_prompts(prompts: Sequence[str], tokenizer, text_encoder: TextEncoderFn, *, style: str = "diffusers",
                        max_sequence_length: int = 300, chi: Sequence[str] | None = None,
                        use_chi: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (B, max_sequence_length, D) and mask (B, max_sequence_length) of ``prompts``.

    ``tokenizer`` is a :class:`sana_jax.text.tokenizer.Tokenizer`; ``text_encoder(ids, mask)`` returns Gemma-2's
    last hidden state. ``use_chi=False`` is the negative-prompt path (no CHI, no selection).
    """
    if style not in STYLES:
        raise InputError(f"prompt style must be one of {sorted(STYLES)}, got {style!r}")
    texts = [preprocess(p, style) for p in prompts]
    if use_chi:
        prefix = "\n".join(chi if chi is not None else STYLES[style])
        chi_tokens = len(tokenizer.token_ids([prefix])[0])  # with BOS, as ``len(tokenizer.encode(chi))``
        ids, mask = tokenizer.encode([prefix + t for t in texts], max_length=chi_tokens + max_sequence_length - 2,
                                     padding_side="right")
    else:
        ids, mask = tokenizer.encode(texts, max_length=max_sequence_length, padding_side="right")
    hidden = np.asarray(text_encoder(ids, mask))
    if use_chi:
        select = np.array([0, *range(-max_sequence_length + 1, 0)])
        hidden, mask = hidden[:, select], mask[:, select]
    return hidden, np.asarray(mask)


def encode_for_guidance(prompts: Sequence[str], negative_prompts: Sequence[str] | None, tokenizer,
                        text_encoder: TextEncoderFn, *, style: str = "diffusers", motion_score: int | None = None,
                        max_sequence_length: int = 300, chi: Sequence[str] | str | None = "style"):
    """(embeds, mask, negative_embeds | None, negative_mask | None) as ``SanaVideoPipeline.encode_prompt`` gives
    them; ``negative_prompts=None`` means no classifier-free guidance. ``chi``: ``"style"`` for the style's
    complex human instruction, a sequence of lines for another, None for none (prompts then encode like the
    negative prompt: no prefix, no position selection)."""
    prompts = [with_motion_score(p, motion_score) for p in prompts]
    embeds, mask = encode_sana_prompts(prompts, tokenizer, text_encoder, style=style,
                                       max_sequence_length=max_sequence_length,
                                       chi=None if chi == "style" else chi, use_chi=chi is not None)
    if negative_prompts is None:
        return embeds, mask, None, None
    neg, neg_mask = encode_sana_prompts(negative_prompts, tokenizer, text_encoder, style=style,
                                        max_sequence_length=max_sequence_length, use_chi=False)
    return embeds, mask, neg, neg_mask

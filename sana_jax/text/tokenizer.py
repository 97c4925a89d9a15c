"""Tokenizers loaded from a checkpoint folder, offline: ``tokenizer.json`` (``tokenizers``) or ``tokenizer.model``
(``sentencepiece``, optional).

``Tokenizer.from_folder(path).encode(texts, max_length, padding_side=...)`` returns ``(ids, mask)`` as int32
numpy arrays (B, L). Special tokens come from the tokenizer itself (the ``tokenizer.json`` post-processor adds
Gemma's ``<bos>``); pad/bos/eos ids are read from ``tokenizer_config.json`` / ``special_tokens_map.json``.
SANA-Video pads Gemma-2 prompts on the right, LTX-2 pads Gemma-3 prompts on the left (diffusers
``SanaVideoPipeline`` / ``LTX2Pipeline``; ``Lightricks/LTX-2:packages/ltx-core/src/ltx_core/text_encoders/gemma/``).
Prompts longer than ``max_length`` are cut on the right, with a warning naming how many tokens
were dropped.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sana_jax.config import read_json
from sana_jax.errors import CheckpointError, InputError

_DEFAULT_TOKENS = {"pad": "<pad>", "bos": "<bos>", "eos": "<eos>"}


def _content(token) -> str | None:
    return token.get("content") if isinstance(token, dict) else token


class Tokenizer:
    """A text → token-id front end with fixed-length padding and truncation.

    Attributes: ``pad_id``, ``bos_id``, ``eos_id`` (``None`` when the folder defines none), ``folder``.
    """

    def __init__(self, encode_fn, token_to_id, *, folder: Path, add_bos: bool = False, add_eos: bool = False,
                 tokens: dict | None = None):
        self._encode_fn, self._token_to_id, self.folder = encode_fn, token_to_id, folder
        self._add_bos, self._add_eos = add_bos, add_eos  # sentencepiece only: tokenizer.json adds its own
        tokens = tokens or {}
        ids = {}
        for kind, default in _DEFAULT_TOKENS.items():
            name = tokens.get(kind) or default
            ids[kind] = token_to_id(name) if name is not None else None
        self.bos_id, self.eos_id = ids["bos"], ids["eos"]
        self.pad_id = ids["pad"] if ids["pad"] is not None else ids["eos"]
        if self._add_bos and self.bos_id is None:
            raise CheckpointError(f"{folder}: add_bos_token is set but the bos token is not in the vocabulary")

    @classmethod
    def from_folder(cls, path) -> "Tokenizer":
        """Load from a folder holding ``tokenizer.json`` or ``tokenizer.model`` (and optionally
        ``tokenizer_config.json`` / ``special_tokens_map.json``)."""
        folder = Path(path)
        if not folder.is_dir():
            raise InputError(f"{folder}: tokenizer folder does not exist")
        config = read_json(folder / "tokenizer_config.json", error=CheckpointError, missing={})
        special = read_json(folder / "special_tokens_map.json", error=CheckpointError, missing={})
        tokens = {k: _content(config.get(f"{k}_token")) or _content(special.get(f"{k}_token"))
                  for k in _DEFAULT_TOKENS}
        if (folder / "tokenizer.json").exists():
            import tokenizers

            try:
                backend = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
            except Exception as e:  # tokenizers raises a bare Exception on malformed files
                raise CheckpointError(f"{folder / 'tokenizer.json'}: cannot load ({e})") from e
            backend.no_padding()
            backend.no_truncation()

            def encode_fn(texts, specials, max_length=None):
                if max_length is None:
                    return [e.ids for e in backend.encode_batch(list(texts), add_special_tokens=specials)]
                backend.enable_truncation(max_length)  # keeps the post-processor's special tokens, like HF
                try:
                    return [e.ids for e in backend.encode_batch(list(texts), add_special_tokens=specials)]
                finally:
                    backend.no_truncation()

            return cls(encode_fn, backend.token_to_id, folder=folder, tokens=tokens)
        if (folder / "tokenizer.model").exists():
            try:
                import sentencepiece
            except ImportError:
                raise CheckpointError(f"{folder}: has only tokenizer.model, which needs the optional 'sentencepiece' "
                                      "package (pip install sentencepiece), and no tokenizer.json") from None
            sp = sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))

            def token_to_id(name):
                i = sp.piece_to_id(name)
                return None if i == sp.unk_id() and name != sp.id_to_piece(i) else int(i)

            return cls(lambda texts, _specials, _max=None: [list(sp.encode(t)) for t in texts], token_to_id,
                       folder=folder, add_bos=config.get("add_bos_token", True),
                       add_eos=config.get("add_eos_token", False), tokens=tokens)
        raise CheckpointError(f"{folder}: no tokenizer.json or tokenizer.model found")

    def token_ids(self, texts: Sequence[str], add_special_tokens: bool = True,
                  max_length: int | None = None) -> list[list[int]]:
        """Unpadded token ids of each text, at most ``max_length`` of them (special tokens kept)."""
        if isinstance(texts, str):
            texts = [texts]
        if not all(isinstance(t, str) for t in texts):
            raise InputError(f"texts must be strings, got {[type(t).__name__ for t in texts]}")
        out = self._encode_fn(texts, add_special_tokens, max_length)
        if add_special_tokens and (self._add_bos or self._add_eos):  # sentencepiece: specials added here
            head, tail = [self.bos_id] if self._add_bos else [], [self.eos_id] if self._add_eos else []
            room = None if max_length is None else max(max_length - len(head) - len(tail), 0)
            out = [head + ids[:room] + tail for ids in out]
        return out

    def encode(self, texts: str | Sequence[str], max_length: int | None = None, padding_side: str = "right",
               add_special_tokens: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, mask)``, int32 (B, L): L = ``max_length``, or the longest prompt when it is ``None``.

        Padding goes on ``padding_side`` ("right" for SANA-Video's Gemma-2, "left" for LTX-2's Gemma-3) with
        ``pad_id`` and mask 0. Longer prompts keep their first ``max_length`` tokens (a warning says how many
        were dropped).
        """
        if padding_side not in ("right", "left"):
            raise InputError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        if max_length is not None and max_length < 1:
            raise InputError(f"max_length must be ≥ 1, got {max_length}")
        seqs = self.token_ids(texts, add_special_tokens)
        length = max_length if max_length is not None else max((len(s) for s in seqs), default=0)
        dropped = [max(len(s) - length, 0) for s in seqs]
        if any(dropped):
            seqs = self.token_ids(texts, add_special_tokens, max_length=length)
            warnings.warn(f"{sum(d > 0 for d in dropped)} of {len(seqs)} prompts are longer than max_length={length} "
                          f"tokens and were truncated: dropped {sum(dropped)} tokens (per prompt: {dropped})",
                          stacklevel=2)
        if self.pad_id is None and any(len(s) < length for s in seqs):
            raise CheckpointError(f"{self.folder}: the tokenizer defines no pad (or eos) token to pad with")
        ids = np.full((len(seqs), length), self.pad_id or 0, np.int32)
        mask = np.zeros((len(seqs), length), np.int32)
        for row, seq in enumerate(seqs):
            start = 0 if padding_side == "right" else length - len(seq)
            ids[row, start:start + len(seq)] = seq
            mask[row, start:start + len(seq)] = 1
        return ids, mask

    __call__ = encode

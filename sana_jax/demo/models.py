"""The embedded default model family: configurations, the word-level tokenizer, and the pipeline folder layout.

Sizes (64×64 pixels, 9 frames → latents 9 × 8 × 8 × 16, 144 DiT tokens) are chosen so that ``sana-jax generate``
with no ``--model`` writes its mp4 in well under a minute on two CPU cores:

* text encoder: a Gemma-2 architecture (2 layers, width 64) over a word-level tokenizer of the dataset's
  vocabulary (:data:`sana_jax.demo.shapes.VOCABULARY`);
* DiT: SANA-Video (linear attention, Mix-FFN with temporal conv, cross-attention), 6 layers, width 128,
  patch 1×2×2;
* VAE: :class:`sana_jax.vae.patch.PatchVAE` (per frame, 8× spatial, 16 latent channels). A 4× temporal
  compression was tried first: at this size the autoencoder lost the moving object (3 of 8 clips read back right
  against 34 of 48 per frame), so the demo trades DiT tokens for a faithful latent.
"""

from __future__ import annotations

import json
from pathlib import Path

from sana_jax.demo.shapes import VOCABULARY
from sana_jax.models.gemma import GemmaConfig
from sana_jax.models.preconditioning import FlowPreconditioning, PreconditionedConfig
from sana_jax.models.sana_video import SanaVideoConfig
from sana_jax.vae.patch import PatchVAEConfig

SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>")
MAX_SEQUENCE_LENGTH = 12
SIZE, FRAMES, FPS = 64, 9, 8

#: Generation defaults of the default model (stored in ``model_index.json`` under ``_sana_jax``; diffusers ignores
#: keys that start with an underscore). No complex-human-instruction prefix: the tokenizer knows only the
#: dataset's words. Guidance 1.5 was chosen on 16 prompts seen in training (2 seeds; guidance 1 to 4): stronger
#: guidance keeps the motion but shifts colours (green to yellow, blue to purple), none loses motion.
PIPELINE_DEFAULTS = {"height": SIZE, "width": SIZE, "num_frames": FRAMES, "num_inference_steps": 20,
                     "guidance_scale": 1.5, "fps": FPS, "complex_human_instruction": None,
                     "max_sequence_length": MAX_SEQUENCE_LENGTH}

SCHEDULER = {"_class_name": "DPMSolverMultistepScheduler", "_diffusers_version": "0.42.1", "algorithm_type":
             "dpmsolver++", "flow_shift": 3.0, "num_train_timesteps": 1000, "prediction_type": "flow_prediction",
             "solver_order": 2, "use_flow_sigmas": True, "final_sigmas_type": "zero", "lower_order_final": True}


def vocabulary() -> dict[str, int]:
    return {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *sorted(set(VOCABULARY))))}


def text_encoder_config() -> GemmaConfig:
    return GemmaConfig(model_type="gemma2", vocab_size=len(vocabulary()), hidden_size=64, intermediate_size=128,
                       num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                       query_pre_attn_scalar=32.0, sliding_window=64, max_position_embeddings=64, pad_token_id=0)


def transformer_config(noise_scale: float | None = None, target: str = "edm") -> SanaVideoConfig:
    """The demo DiT; with ``noise_scale``, a :class:`PreconditionedConfig`: the DiT wrapped in
    :class:`FlowPreconditioning` (σ_d = 1: normalised latents; ``target`` "edm" or "x0"). Build it with
    :func:`sana_jax.models.preconditioning.build_transformer`."""
    config = SanaVideoConfig(in_channels=16, out_channels=16, num_attention_heads=4, attention_head_dim=32,
                             num_layers=6, num_cross_attention_heads=4, cross_attention_head_dim=32,
                             cross_attention_dim=128, caption_channels=text_encoder_config().hidden_size,
                             mlp_ratio=2.5, sample_size=SIZE // 8, patch_size=(1, 2, 2))
    if noise_scale is None:
        return config
    return PreconditionedConfig.wrap(config, FlowPreconditioning(sigma_data=1.0, noise_scale=noise_scale,
                                                                  target=target))


def vae_config(**stats) -> PatchVAEConfig:
    return PatchVAEConfig(latent_channels=16, hidden_channels=96, num_res_blocks=2, temporal_compression=1, **stats)


def write_tokenizer(folder: str | Path) -> Path:
    """A ``tokenizers`` word-level tokenizer (lower-cased, split on whitespace and punctuation, ``<bos>`` first)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = vocabulary()
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>", "bos_token": "<bos>",
         "eos_token": "<eos>", "unk_token": "<unk>", "padding_side": "right",
         "model_max_length": MAX_SEQUENCE_LENGTH}, indent=2))
    return folder


def model_index() -> dict:
    return {"_class_name": "SanaVideoPipeline", "_diffusers_version": "0.42.1",
            "transformer": ["diffusers", "SanaVideoTransformer3DModel"], "vae": ["sana_jax", "SanaJaxPatchVAE"],
            "text_encoder": ["transformers", "Gemma2Model"], "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
            "scheduler": ["diffusers", "DPMSolverMultistepScheduler"], "_sana_jax": PIPELINE_DEFAULTS}

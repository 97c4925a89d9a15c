"""Text-to-video end to end and per stage: sana-jax ``SanaVideoPipeline`` vs diffusers ``SanaVideoPipeline``,
the same random weights (one folder written by diffusers), prompt and initial noise, in one process.

    python bench/pipeline.py                     # small CPU config (committed result)
    python bench/pipeline.py --config 720p --dtype bfloat16 --steps 50   # real 720p shapes, random weights (GPU)

Per stage for diffusers: ``encode_prompt``, the denoising loop (``output_type="latent"`` minus encoding), and
``vae.decode`` + postprocessing; for sana-jax the pipeline's own stage timings. Each side runs once to warm up
(compilation for JAX), then ``--repeats`` times; medians are reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch's spinning threads starve XLA in one process
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import device_description, write_result  # noqa: E402

PROMPT = "a red circle moving left over a blue background"


def word_tokenizer(prompt: str = PROMPT):
    """A word-level ``tokenizers.Tokenizer`` (the stand-in for Gemma's with random weights): ``<pad> <eos> <bos>
    <unk>`` then the prompt's words; ``<bos>`` prepended as Gemma's tokenizer does."""
    import tokenizers

    words = ["<pad>", "<eos>", "<bos>", "<unk>"] + sorted(set(prompt.split()))
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok.post_processor = tokenizers.processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return tok


def build(folder: Path, config: str) -> dict:
    import diffusers
    import torch
    import transformers

    torch.manual_seed(0)
    tok = word_tokenizer()
    vocab_size = tok.get_vocab_size()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                                     pad_token="<pad>", unk_token="<unk>")
    if config == "small":
        te = transformers.Gemma2Model(transformers.Gemma2Config(
            vocab_size=vocab_size, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=64, pad_token_id=0, bos_token_id=2, eos_token_id=1))
        dit = diffusers.SanaVideoTransformer3DModel(
            in_channels=16, out_channels=16, num_attention_heads=4, attention_head_dim=56, num_layers=4,
            num_cross_attention_heads=4, cross_attention_head_dim=56, cross_attention_dim=224,
            caption_channels=256, mlp_ratio=3.0, patch_size=(1, 2, 2), sample_size=30)
        vae = diffusers.AutoencoderKLWan(base_dim=32, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1)
        size = dict(height=128, width=192, frames=17)
    else:
        te = transformers.Gemma2Model(transformers.Gemma2Config(
            vocab_size=vocab_size, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
            num_attention_heads=8, num_key_value_heads=4, head_dim=256, pad_token_id=0, bos_token_id=2,
            eos_token_id=1))
        dit = diffusers.SanaVideoTransformer3DModel(in_channels=128, out_channels=128, mlp_ratio=3.0,
                                                    patch_size=(1, 1, 1), sample_size=22)
        vae = diffusers.AutoencoderKLLTX2Video(timestep_conditioning=False, decoder_causal=False)
        size = dict(height=704, width=1280, frames=81)
    scheduler = diffusers.DPMSolverMultistepScheduler(flow_shift=8.0, use_flow_sigmas=True,
                                                      prediction_type="flow_prediction")
    pipe = diffusers.SanaVideoPipeline(tokenizer=tokenizer, text_encoder=te.eval(), vae=vae.eval(),
                                       transformer=dit.eval(), scheduler=scheduler)
    pipe.save_pretrained(folder)
    return size


def run_diffusers(folder, size, args, noise):
    import diffusers
    import torch

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    pipe = diffusers.SanaVideoPipeline.from_pretrained(folder, torch_dtype=dtype).to(dev)
    pipe.vae.to(torch.float32)
    pipe.set_progress_bar_config(disable=True)
    latents = torch.from_numpy(noise.transpose(0, 4, 1, 2, 3).copy()).to(dev)
    kw = dict(negative_prompt="", height=size["height"], width=size["width"], frames=size["frames"],
              num_inference_steps=args.steps, guidance_scale=6.0, use_resolution_binning=False)

    def sync():
        if dev == "cuda":
            torch.cuda.synchronize()

    runs = []
    for _ in range(args.repeats + 1):
        with torch.inference_mode():
            t0 = time.perf_counter()
            pipe.encode_prompt(PROMPT, do_classifier_free_guidance=True, negative_prompt="", device=dev)
            sync()
            t1 = time.perf_counter()
            lat = pipe(PROMPT, latents=latents.to(dtype), output_type="latent", **kw).frames
            sync()
            t2 = time.perf_counter()
            vae = pipe.vae
            mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(dev) if hasattr(
                vae.config, "latents_mean") else vae.latents_mean.view(1, -1, 1, 1, 1)
            std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(dev) if hasattr(
                vae.config, "latents_std") else vae.latents_std.view(1, -1, 1, 1, 1)
            video = vae.decode((lat.float() * std + mean)).sample
            pipe.video_processor.postprocess_video(video, output_type="np")
            sync()
            t3 = time.perf_counter()
        runs.append({"text_encoding": t1 - t0, "denoising": (t2 - t1) - (t1 - t0), "decoding": t3 - t2,
                     "total": (t2 - t1) + (t3 - t2)})
    return runs[1:], runs[0]


def run_ours(folder, size, args, noise):
    from sana_jax.pipelines import SanaVideoPipeline

    pipe = SanaVideoPipeline.from_pretrained(folder, dtype=args.dtype)
    runs = []
    for _ in range(args.repeats + 1):
        t0 = time.perf_counter()
        out = pipe(PROMPT, height=size["height"], width=size["width"], num_frames=size["frames"],
                   num_inference_steps=args.steps, guidance_scale=6.0, latents=noise, progress=False)
        runs.append({**out.timings, "total": time.perf_counter() - t0})
    return runs[1:], runs[0]


def median(runs):
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=["small", "720p"], default="small")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "pipe"
        size = build(folder, args.config)
        from sana_jax.pipelines.components import PipelineFolder

        shape = PipelineFolder.open(folder).latent_shape(1, size["frames"], size["height"], size["width"])
        noise = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        ours, ours_first = run_ours(folder, size, args, noise)
        theirs, theirs_first = run_diffusers(folder, size, args, noise)
    result = {"benchmark": "pipeline", "config": args.config, "dtype": args.dtype, "steps": args.steps,
              "guidance_scale": 6.0, **size, "device": device_description(),
              "sana_jax": {"median_s": median(ours), "first_call_s": ours_first},
              "diffusers": {"median_s": median(theirs), "first_call_s": theirs_first}}
    result["speedup_vs_diffusers"] = {k: result["diffusers"]["median_s"][k] / result["sana_jax"]["median_s"][k]
                                      for k in ("text_encoding", "denoising", "decoding", "total")}
    name = f"pipeline_{args.config}_{args.dtype}_{result['device']['jax_backend']}"
    path = write_result(name, result)
    for k in ("text_encoding", "denoising", "decoding", "total"):
        print(f"{k:14s} sana-jax {result['sana_jax']['median_s'][k]:7.2f} s   "
              f"diffusers {result['diffusers']['median_s'][k]:7.2f} s   ×{result['speedup_vs_diffusers'][k]:.2f}")
    print("→", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

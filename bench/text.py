"""Text-encoder forward: sana-jax Gemma vs transformers, same weights, same inputs, same process, same device.

    python bench/text.py                                        # small Gemma-2 on CPU (committed result)
    python bench/text.py --full gemma2-2b --dtype bfloat16      # SANA-Video's encoder, on a GPU
    python bench/text.py --full gemma3-12b --dtype bfloat16 --text-len 1024 --hidden-states   # LTX-2's, on a GPU

The prompts are ``--text-len`` tokens (300 = SANA-Video's caption length), batch ``--batch`` with the second
prompt right-padded to half its length. Weights are transformers' random init, handed to sana-jax through the
``converters.gemma`` key table. ``--hidden-states`` also returns every layer's hidden state (what LTX-2 needs).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# torch's OpenMP threads spin after each op by default and then starve XLA's threads (and the reverse) when both run
# in one process on few cores: measured 2 cores, transformers median 574 ms (min 38 ms) with spinning, 83 ms without.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from bench.common import device_description, time_calls, write_result  # noqa: E402

SMALL = dict(model_type="gemma2", vocab_size=4096, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
             num_attention_heads=4, num_key_value_heads=2, head_dim=64, sliding_window=128)
FULL = {
    "gemma2-2b": dict(model_type="gemma2", vocab_size=256000, hidden_size=2304, intermediate_size=9216,
                      num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4, head_dim=256),
    "gemma3-12b": dict(model_type="gemma3_text", vocab_size=262208, hidden_size=3840, intermediate_size=15360,
                       num_hidden_layers=48, num_attention_heads=16, num_key_value_heads=8, head_dim=256,
                       sliding_window=1024, rope_scaling={"rope_type": "linear", "factor": 8.0}),
}


class TorchStateDict(Mapping):
    """A torch state dict seen as ``name -> numpy`` (bf16 through ml_dtypes), converted on access only."""

    def __init__(self, state):
        self.state = state

    def __getitem__(self, name):
        import ml_dtypes
        import torch

        t = self.state[name].detach().cpu()
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return t.numpy()

    def shape(self, name):
        return tuple(self.state[name].shape)

    def dtype(self, name):
        import ml_dtypes
        import torch

        t = self.state[name]
        if t.dtype == torch.bfloat16:
            return np.dtype(ml_dtypes.bfloat16)
        return torch.empty(0, dtype=t.dtype).numpy().dtype

    def __iter__(self):
        return iter(self.state)

    def __len__(self):
        return len(self.state)


def flops_per_token(cfg, length: int) -> float:
    """Forward FLOPs per token (multiply-add = 2), attention over the full causal length (upper bound)."""
    d, h, hd = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    proj = d * hd * (2 * cfg.num_attention_heads + 2 * cfg.num_key_value_heads) + 3 * d * h
    attn = 2 * length * cfg.num_attention_heads * hd
    return 2 * cfg.num_hidden_layers * (proj + attn)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", choices=list(FULL), default=None, help="released size (default: a small Gemma-2)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--text-len", type=int, default=300)
    p.add_argument("--hidden-states", action="store_true", help="also return all hidden states")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--no-torch", action="store_true", help="time sana-jax only")
    p.add_argument("--name", default=None)
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import torch
    import transformers
    from flax import nnx

    from converters import gemma as conv
    from sana_jax.models.gemma import GemmaConfig

    hf = FULL[args.full] if args.full else SMALL
    cfg = GemmaConfig.from_hf(hf, "bench")
    use_cuda = torch.cuda.is_available()
    dev = "cuda" if use_cuda else "cpu"
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    kwargs = {k: v for k, v in hf.items() if k != "model_type"}
    torch.manual_seed(0)
    with torch.device(dev):
        if cfg.is_gemma3:
            ref = transformers.Gemma3TextModel(transformers.Gemma3TextConfig(**kwargs))
        else:
            ref = transformers.Gemma2Model(transformers.Gemma2Config(**kwargs))
    ref = ref.to(torch_dtype).eval()
    model = conv.load(TorchStateDict(ref.state_dict()), cfg, where="state_dict", dtype=args.dtype)

    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg.vocab_size, (args.batch, args.text_len)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1:, args.text_len // 2:] = 0
    graphdef, params = nnx.split(model)

    @jax.jit
    def forward(params, i, m):
        out = nnx.merge(graphdef, params)(i, m, output_hidden_states=args.hidden_states)
        return out if args.hidden_states else (out, ())

    jids, jmask = jnp.asarray(ids), jnp.asarray(mask)
    ours = time_calls(lambda: jax.block_until_ready(forward(params, jids, jmask)), args.repeats)
    out_jax = np.asarray(forward(params, jids, jmask)[0], np.float32)

    tokens = args.batch * args.text_len
    flops = flops_per_token(cfg, args.text_len) * tokens
    result = {"benchmark": "text_encoder", "device": device_description(), "model": args.full or "small-gemma2",
              "dtype": args.dtype, "config": cfg.to_hf(), "batch": args.batch, "text_len": args.text_len,
              "hidden_states": args.hidden_states, "model_gflop": flops / 1e9,
              "sana_jax": {**ours, "tflops": flops / ours["median_s"] / 1e12,
                           "tokens_per_s": tokens / ours["median_s"]}}
    if not args.no_torch:
        ti, tm = torch.from_numpy(ids.astype(np.int64)).to(dev), torch.from_numpy(mask.astype(np.int64)).to(dev)

        def run_torch():
            with torch.inference_mode():
                out = ref(input_ids=ti, attention_mask=tm, output_hidden_states=args.hidden_states)
            if use_cuda:
                torch.cuda.synchronize()
            return out.last_hidden_state

        theirs = time_calls(run_torch, args.repeats)
        out_torch = run_torch().float().cpu().numpy()
        result["transformers"] = {**theirs, "tflops": flops / theirs["median_s"] / 1e12,
                                  "torch": torch.__version__, "transformers": transformers.__version__,
                                  "attn_implementation": ref.config._attn_implementation,
                                  "torch_threads": torch.get_num_threads(),
                                  "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
        result["speedup_vs_transformers"] = theirs["median_s"] / ours["median_s"]
        valid = mask.astype(bool)
        result["max_rel_diff_vs_transformers"] = float(np.max(np.abs(out_jax - out_torch)[valid]) /
                                                       np.max(np.abs(out_torch[valid])))
    name = args.name or f"text_{args.full or 'small'}_{args.dtype}_{result['device']['jax_backend']}"
    path = write_result(name, result)
    print(f"sana-jax {ours['median_s'] * 1e3:.1f} ms", end="")
    if "transformers" in result:
        print(f", transformers {result['transformers']['median_s'] * 1e3:.1f} ms, "
              f"speed-up ×{result['speedup_vs_transformers']:.2f}, "
              f"max rel diff {result['max_rel_diff_vs_transformers']:.1e}", end="")
    print(f" → {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

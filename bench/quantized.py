"""8-bit weights (``--weights fp8`` / ``int8``, ``converters.load(weights=)``): memory, speed and quality against
bf16 (and float32).

    python bench/quantized.py            # writes bench/results/quantized_cpu.json (…_gpu.json on a GPU)

1. **The embedded default model** (sana_jax/default_model) loaded four ways: float32, bfloat16, and bfloat16
   compute with fp8 / int8 Linear weights. Per mode: bytes on device of the transformer and the text encoder (the
   Linear kernels with their scales, and the rest); the DiT output on fixed inputs and the decoded frames of fixed
   prompts and seeds against the bf16 run (max / mean absolute error); the held-out prompt score (all 16 held-out
   prompts, colour and direction read back by ``sana_jax.demo.shapes.measure``, as recorded in recipe.json); the
   generation time of those 16 prompts and the jitted DiT forward time.
2. **A SANA-Video-2B-wide DiT** (width 2240, 2 layers, random weights, written as a bf16 safetensors file): per mode,
   in a fresh process, the load time, the peak anonymous host memory while loading (sampled every 2 ms from
   /proc/self/status: the 8-bit modes quantise while streaming, so the peak stays near the 8-bit size), the bytes
   on device, and the jitted bf16 forward time on 128 tokens.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import device_description, time_calls, write_result  # noqa: E402

#: (name, compute dtype, weights)
MODES = (("float32", "float32", None), ("bfloat16", "bfloat16", None), ("fp8", "bfloat16", "fp8"),
         ("int8", "bfloat16", "int8"))
FRAME_PROMPTS = ["a blue square moving up", "a red circle moving left", "a green triangle moving down",
                 "a yellow circle moving right"]


def model_bytes(model) -> dict:
    """Bytes on device: the dense kernels (every Linear's, the temporal conv's) with their scales, and the rest."""
    from flax import nnx

    from converters.nnx_state import flatten

    state = flatten(nnx.to_pure_dict(nnx.state(model)))
    size = {k: sum(s.data.nbytes for s in v.addressable_shards) for k, v in state.items()}
    dense = (".kernel", ".kernel_scale", ".conv_temp", ".conv_temp_scale")
    linear = sum(v for k, v in size.items() if k.endswith(dense))
    return {"linear_bytes": linear, "other_bytes": sum(size.values()) - linear, "total_bytes": sum(size.values())}


def errors(got, want) -> dict:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    diff = np.abs(got - want)
    return {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
            "max_rel": float(diff.max() / max(np.abs(want).max(), 1e-30))}


def embedded_model() -> dict:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from sana_jax.demo import default_model_path
    from sana_jax.demo.recipe import evaluate
    from sana_jax.demo.shapes import held_out_prompts
    from sana_jax.pipelines import SanaVideoPipeline

    @nnx.jit
    def forward(model, x, text, t, mask):
        return model(x, text, t, mask)

    rng = np.random.default_rng(0)
    rows, outputs, frames = {}, {}, {}
    for name, dtype, weights in MODES:
        start = time.perf_counter()
        pipe = SanaVideoPipeline.from_pretrained(default_model_path(), dtype=dtype, weights=weights)
        load_s = time.perf_counter() - start
        cfg = pipe.transformer.config
        if not outputs:  # the same inputs for every mode
            x = rng.standard_normal((2, 9, cfg.sample_size, cfg.sample_size, cfg.in_channels)).astype(np.float32)
            text = rng.standard_normal((2, 12, cfg.caption_channels)).astype(np.float32)
            inputs = (jnp.asarray(x), jnp.asarray(text), jnp.array([200.0, 700.0]), jnp.ones((2, 12), jnp.int32))
        outputs[name] = np.asarray(forward(pipe.transformer, *inputs), np.float32)
        timing = time_calls(lambda: jax.block_until_ready(forward(pipe.transformer, *inputs)), repeats=5)
        frames[name] = pipe(FRAME_PROMPTS, seed=0, progress=False).frames
        start = time.perf_counter()
        score = evaluate(pipe, held_out_prompts())
        rows[name] = {"dtype": dtype, "weights": weights, "load_s": load_s,
                      "transformer": model_bytes(pipe.transformer), "text_encoder": model_bytes(pipe.text_encoder),
                      "dit_forward_s": timing["median_s"], "held_out_generation_s": time.perf_counter() - start,
                      "held_out_score": score["score"], "held_out_colour": score["colour"],
                      "held_out_direction": score["direction"]}
        print(f"{name}: held-out {score['score']:.4f}, DiT {rows[name]['transformer']['linear_bytes']:,} B of "
              f"Linear weights, forward {timing['median_s'] * 1e3:.1f} ms", flush=True)
    for name, row in rows.items():
        row["dit_output_vs_bfloat16"] = errors(outputs[name], outputs["bfloat16"])
        row["dit_output_vs_float32"] = errors(outputs[name], outputs["float32"])
        row["frames_vs_bfloat16"] = errors(frames[name], frames["bfloat16"])  # uint8 levels
        row["linear_bytes_vs_bfloat16"] = row["transformer"]["linear_bytes"] / rows["bfloat16"]["transformer"][
            "linear_bytes"]
    return {"prompts_for_frames": FRAME_PROMPTS, "seed": 0, "modes": rows}


# -- a DiT of SANA-Video 2B's width ---------------------------------------------------------------------------------

def wide_config():
    from sana_jax.models.sana_video import SanaVideoConfig

    return SanaVideoConfig(in_channels=16, out_channels=16, num_attention_heads=20, attention_head_dim=112,
                           num_layers=2, num_cross_attention_heads=20, cross_attention_head_dim=112,
                           cross_attention_dim=2240, caption_channels=2304, mlp_ratio=2.5, patch_size=(1, 2, 2),
                           qk_norm="rms_norm_across_heads", attention_bias=False, sample_size=30)


def write_wide(folder: Path) -> int:
    """The wide DiT with random weights as a bf16 diffusers folder; returns its parameter count."""
    import ml_dtypes

    from converters import sana_video
    from converters.nnx_state import random_model
    from converters.safetensors_io import save_safetensors

    model = random_model(sana_video, wide_config(), dtype=np.float32)
    tensors = {k: np.asarray(v, ml_dtypes.bfloat16) for k, v in sana_video.export(model).items()}
    folder.mkdir(parents=True)
    save_safetensors(tensors, folder / "diffusion_pytorch_model.safetensors")
    (folder / "config.json").write_text(json.dumps(model.config.to_diffusers()))
    return sum(v.size for v in tensors.values())


def _anon_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


def load_case(folder: str, weights: str | None) -> dict:
    """One mode in this (fresh) process: load time, peak anonymous memory while loading, device bytes, forward."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    import converters

    base, peak, done = _anon_bytes(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _anon_bytes())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    model = converters.load(folder, dtype="bfloat16", weights=weights)
    jax.block_until_ready(nnx.state(model))
    load_s = time.perf_counter() - start
    done.set()
    sampler.join()
    cfg = model.config
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((1, 2, 16, 16, cfg.in_channels)), jnp.float32)
    text = jnp.asarray(rng.standard_normal((1, 16, cfg.caption_channels)), jnp.float32)
    t, mask = jnp.array([500.0]), jnp.ones((1, 16), jnp.int32)
    forward = nnx.jit(lambda m, *a: m(*a))
    out = np.asarray(forward(model, x, text, t, mask), np.float32)
    timing = time_calls(lambda: jax.block_until_ready(forward(model, x, text, t, mask)), repeats=3)
    return {"weights": weights, "load_s": load_s, "peak_anon_bytes_while_loading": peak[0] - base,
            **model_bytes(model), "forward_128_tokens_s": timing["median_s"], "output": out.ravel()[:4096].tolist()}


def wide_model() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "wide"
        params = write_wide(folder)
        file_bytes = (folder / "diffusion_pytorch_model.safetensors").stat().st_size
        rows = {}
        for name, _, weights in MODES[1:]:
            proc = subprocess.run([sys.executable, __file__, "--load-case", str(folder), str(weights)],
                                  capture_output=True, text=True, check=True)
            rows[name] = json.loads(proc.stdout.strip().splitlines()[-1])
            row = rows[name]
            print(f"wide {name}: load {row['load_s']:.1f} s, peak +{row['peak_anon_bytes_while_loading'] / 2**20:.0f} "
                  f"MiB, device {row['total_bytes'] / 2**20:.0f} MiB, forward {row['forward_128_tokens_s']:.2f} s",
                  flush=True)
    want = np.asarray(rows["bfloat16"].pop("output"))
    for name in rows:
        got = np.asarray(rows[name].pop("output", want))
        rows[name]["output_vs_bfloat16"] = errors(got, want)
    return {"config": wide_config().to_diffusers(), "parameters": params, "bf16_file_bytes": file_bytes,
            "modes": rows}


def main() -> None:
    import jax

    result = {"device": device_description(), "embedded_model": embedded_model(), "wide_dit": wide_model()}
    name = "quantized_" + ("cpu" if jax.devices()[0].platform == "cpu" else "gpu")
    print("wrote", write_result(name, result))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--load-case"]:
        print(json.dumps(load_case(sys.argv[2], None if sys.argv[3] == "None" else sys.argv[3])))
    else:
        import argparse

        argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
        main()

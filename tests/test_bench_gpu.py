"""``bench/gpu.py --dry-run``: every part of the one-command GPU benchmark at tiny sizes on the CPU, in this process
(the worker's compilation cache helps), so the script cannot rot between GPU runs. The times mean nothing."""

from __future__ import annotations

import json

import pytest

from bench import gpu


@pytest.mark.slow
def test_dry_run_runs_every_part(tmp_path):
    out = tmp_path / "gpu.json"
    assert gpu.main(["--dry-run", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["dry_run"] is True
    assert result["device"]["jax_backend"] == "cpu" and result["device"]["jax_device"]
    assert {"peak_bf16_tflops", "peak_hbm_tbps", "jax", "python"} <= set(result["device"])
    assert result["versions"]["jax"] and result["budget_s"] > 0
    assert list(result["parts"]) == list(gpu.PARTS)
    for name, part in result["parts"].items():
        assert part["status"] == "ok", (name, part.get("error"), part.get("traceback"))
        assert "error" not in part and part["elapsed_s"] >= 0

    kernel = result["parts"]["linear_attention"]
    assert kernel["kernel_impl"] == "interpret" and set(kernel["shapes"]) == {"480p", "720p", "2k"}
    for row in kernel["shapes"].values():
        assert row["io_bytes"] > 0 and row["xla"]["median_s"] > 0 and row["kernel"]["median_s"] > 0
        assert row["kernel"]["max_rel_diff_vs_xla"] < 1e-4

    dit = result["parts"]["dit_forward"]
    assert dit["model_tflop"] > 0 and dit["sana_jax"]["median_s"] > 0 and "flops_source" in dit
    if isinstance(dit["diffusers"], dict):  # the same weights in diffusers: the same output
        assert dit["max_rel_diff_vs_diffusers"] < 1e-4
    else:
        assert dit["diffusers"].startswith("diffusers not installed")

    t2v = result["parts"]["t2v"]
    for run in (t2v["first_call_s"], t2v["warm_s"]):
        assert {"text_encoding", "denoising", "decoding", "total"} <= set(run)
    assert t2v["first_call_s"]["frames_shape"] == [1, t2v["frames"], t2v["height"], t2v["width"], 3]

    vae = result["parts"]["vae_decode"]
    assert vae["median_s"] > 0 and vae["tiled"] is False and vae["compiled_by"] == "the T2V part"

    refiner = result["parts"]["refiner_step"]
    assert refiner["sana_jax"]["median_s"] > 0 and refiner["flops"]["total_tflop"] > 0
    assert refiner["xla_plan"]["argument_bytes"] > 0

    stream = result["parts"]["streaming"]
    assert stream["cold"]["time_to_first_frame_s"] > 0
    assert stream["warm"]["steady_fps"] > 0 and stream["warm"]["chunks_that_compiled"] == 0


def test_dry_run_never_writes_into_bench_results():
    with pytest.raises(SystemExit):
        gpu.main(["--dry-run", "--parts", "linear_attention", "--out", str(gpu.RESULTS / "gpu_cpu.json")])
    with pytest.raises(SystemExit):
        gpu.main(["--parts", "no_such_part"])


def test_device_draw_has_the_host_draws_scales():
    """The full run draws its random weights on the device (the dry run uses NumPy): same leaves, dtype, scales."""
    import numpy as np

    from bench.gpu_setup import dry_sizes, random_model
    from converters import gemma
    from converters.nnx_state import flat_params

    cfg = dry_sizes().gemma
    got = {k: np.asarray(v, np.float32) for k, v in flat_params(random_model(gemma, cfg, "bfloat16")).items()}
    want = flat_params(random_model(gemma, cfg, "bfloat16", on_device=False))
    assert {k: v.shape for k, v in got.items()} == {k: tuple(v.shape) for k, v in want.items()}
    assert all(str(v.dtype) == "bfloat16" for v in want.values())
    kernel = got["layers.mlp.down_proj.kernel"]  # stacked (layers, 64, 32): N(0, 1/64) per layer, layers differ
    assert abs(kernel.std() - 1 / 8) < 0.02 and not np.allclose(kernel[0], kernel[1])
    norm = got["layers.input_layernorm.weight"]  # 1-D per layer: 1 + N(0, 0.1²)
    assert abs(norm.mean() - 1) < 0.05 and 0.05 < norm.std() < 0.15
    assert abs(got["embed_tokens.embedding"].std() - 1 / np.sqrt(cfg.vocab_size)) < 0.05

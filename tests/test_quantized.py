"""8-bit checkpoints and 8-bit weights (converters/quantized.py): fp8 / int8 files written by torch from the tiny
SANA-Video and LTX-2 references (both scale spellings, with and without input scales, per-tensor and per-channel
scales, blocks left in bf16), loaded dequantised and with ``weights="fp8" | "int8"``, and compared with the
reference run on the same dequantised values; bytes on device, the file's fp8 bytes kept, orbax / safetensors round
trips, ``sana-jax convert --weights int8``, and the errors. Sharded loading: tests/test_quantized_sharded.py."""

from __future__ import annotations

import json

import jax
import ml_dtypes
import numpy as np
import pytest
from flax import nnx

import converters
from converters import quantized
from converters.nnx_state import flatten
from converters.safetensors_io import open_safetensors, save_safetensors
from sana_jax.errors import CheckpointError, ConfigError, InputError
from tests.parity import check, torch
from tests.sana_refs import make_reference, run_reference, tiny_kwargs
from tests.test_ltx2_transformer import check_both, inputs as ltx_inputs, make_reference as ltx_reference
from tests.test_ltx2_transformer import run_reference as run_ltx
from tests.test_ltx2_transformer_checkpoints import NATIVE_CONFIG, _native_state_dict
from tests.test_sana_video_parity import inputs

from safetensors.torch import save_file  # noqa: E402 (after torch: the test extra)

QMAX = {torch.float8_e4m3fn: 448.0, torch.int8: 127.0}


def write_quantized(sd, path, *, dtype=torch.float8_e4m3fn, spelling=("weight_scale", "input_scale"),
                    per_channel=False, input_scale=False, bf16=lambda name: False, quantize=None, extra=None,
                    metadata=None) -> dict[str, np.ndarray]:
    """Write the torch state dict ``sd`` to ``path`` with every matrix / conv weight ``quantize(name)`` picks
    (default: all) stored 8-bit beside its scale (``spelling``: the weight's and input's scale suffixes), the tensors
    of names ``bf16`` picks in bf16, the rest as they are; returns the true (dequantised) values, float32 numpy."""
    quantize = quantize or (lambda name: True)
    tensors, true = dict(extra or {}), {}
    for name, w in sd.items():
        if bf16(name):
            tensors[name] = w.to(torch.bfloat16)
            true[name] = tensors[name].float().numpy()
        elif name.endswith(".weight") and w.ndim >= 2 and quantize(name):
            amax = w.abs().amax(dim=tuple(range(1, w.ndim)), keepdim=True) if per_channel else w.abs().amax()
            scale = (amax / QMAX[dtype]).float()
            q = w / scale
            q = q.round().clamp(-127, 127).to(dtype) if dtype == torch.int8 else q.clamp(-448, 448).to(dtype)
            stem = name[:-len(".weight")]
            tensors[name] = q
            # per channel: fp8 as (out,), int8 as (out, 1, …) — both shapes are met in the wild
            tensors[f"{stem}.{spelling[0]}"] = scale.reshape(-1) if dtype != torch.int8 and per_channel else scale
            if input_scale:
                tensors[f"{stem}.{spelling[1]}"] = torch.tensor(0.02)
            true[name] = (q.float() * scale).numpy()
        else:
            tensors[name] = w
            true[name] = w.float().numpy()
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return true


def device_bytes(tree) -> int:
    """Bytes the arrays of ``tree`` occupy on their devices (every shard counted)."""
    return sum(s.data.nbytes for leaf in jax.tree.leaves(tree) for s in leaf.addressable_shards)


def linear_bytes(model) -> tuple[int, int]:
    """(bytes of the dense kernels — every Linear's and the temporal conv's — with their scales, bytes of the rest
    of the model) on device."""
    state = flatten(nnx.to_pure_dict(nnx.state(model)))
    linear = {k for k in state if k.endswith((".kernel", ".kernel_scale", ".conv_temp", ".conv_temp_scale"))}
    return (device_bytes([state[k] for k in linear]), device_bytes([v for k, v in state.items() if k not in linear]))


def true_weights(model, tmp_path) -> dict[str, np.ndarray]:
    """The model's weights as the diffusers state dict they stand for: exported (8-bit + weight_scale) and read back
    dequantised."""
    folder = converters.export_safetensors(model, tmp_path / "exported")
    source = converters.open_checkpoint(folder / "diffusion_pytorch_model.safetensors")
    return {k: np.asarray(source[k], np.float32) for k in source}


def run_with(ref, weights: dict[str, np.ndarray], run, *args):
    """``run(ref, *args)`` with ``ref``'s weights replaced by ``weights`` (float32)."""
    ref.load_state_dict({k: torch.from_numpy(np.array(v, np.float32)) for k, v in weights.items()})
    return run(ref, *args)


# -- SANA-Video: ComfyUI spelling, per-channel scales, one block in bf16 -------------------------------------------

@pytest.fixture(scope="module")
def sana_fp8(tmp_path_factory):
    """The tiny SANA-Video reference as a diffusers folder whose weights are fp8 (``scale_weight``, per output
    channel, no input scale, ComfyUI's ``scaled_fp8`` marker) except block 1's, kept in bf16."""
    ref = make_reference(**tiny_kwargs(in_channels=16))
    folder = tmp_path_factory.mktemp("sana_fp8") / "transformer"
    folder.mkdir()
    ref.save_config(folder)
    true = write_quantized(ref.state_dict(), folder / "diffusion_pytorch_model.safetensors", per_channel=True,
                           spelling=("scale_weight", "scale_input"),
                           bf16=lambda n: n.startswith("transformer_blocks.1."),
                           extra={"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)})
    x = inputs(16, (5, 6, 10))
    return ref, folder, true, x, run_with(ref, true, run_reference, *x)


def test_fp8_file_loads_dequantised(sana_fp8):
    """Default: every weight dequantised (fp8 · scale, the bf16 block upcast) equals the reference on those values."""
    _, folder, _, x, want = sana_fp8
    model = converters.load(folder, dtype="float32")
    check(model(*x), want, what="fp8 file, dequantised")


@pytest.mark.parametrize("weights", ["fp8", "int8"])
def test_8bit_weights_halve_memory_and_match_their_values(sana_fp8, weights, tmp_path):
    """``weights=``: every dense kernel (the Linears', the temporal conv's) 8-bit with a float32 scale per output
    channel; on device they take 1 byte
    per weight + 4 per output channel (half of bf16's 2 bytes but for the scales), and the outputs equal the
    reference run on the weights they stand for; against the fp8 file's own values, within the format's error."""
    ref, folder, true, x, want = sana_fp8
    model = converters.load(folder, dtype="float32", weights=weights)
    state = flatten(nnx.to_pure_dict(nnx.state(model)))
    kernels = {k: v for k, v in state.items() if k.endswith("_scale")}
    assert "blocks.ff.conv_temp_scale" in kernels and state["blocks.ff.conv_temp_scale"].shape == (2, 32)
    assert kernels and all(state[k[:-len("_scale")]].dtype == np.dtype(ml_dtypes.float8_e4m3fn if weights == "fp8"
                                                                        else np.int8) for k in kernels)
    quant, rest = linear_bytes(model)
    bf16_model = converters.load(folder, dtype="bfloat16")
    full, bf16_rest = linear_bytes(bf16_model)
    n_weights = sum(state[k[:-len("_scale")]].size for k in kernels)
    n_scales = sum(v.size for v in kernels.values())
    assert quant == n_weights + 4 * n_scales
    assert full == 2 * n_weights  # bf16 Linear kernels
    assert quant / full <= 0.5 + 2 * n_scales / n_weights
    assert rest == 2 * bf16_rest  # the rest stays in float32 (bf16 in bf16_model)
    check(model(*x), run_with(ref, true_weights(model, tmp_path), run_reference, *x), what=f"{weights} weights")
    check(model(*x), want, tol={"fp8": 5e-2, "int8": 2e-2}[weights], what=f"{weights} vs the fp8 file")


def test_fp8_weights_keep_the_file_bytes_and_round_trip(sana_fp8, tmp_path):
    """An fp8 weight loaded with ``weights="fp8"`` keeps its bytes and scale; orbax and safetensors exports hold
    them again (a per-tensor scale comes back 0-d) and load back to the same model."""
    _, folder, _, x, _ = sana_fp8
    model = converters.load(folder, weights="fp8")
    raw = open_safetensors(folder / "diffusion_pytorch_model.safetensors")
    q = np.asarray(raw["transformer_blocks.0.attn1.to_q.weight"])
    np.testing.assert_array_equal(np.asarray(model.blocks.attn1.to_q.kernel[...][0]).view(np.uint8),
                                  q.T.view(np.uint8))
    np.testing.assert_array_equal(np.asarray(model.blocks.attn1.to_q.kernel_scale[...][0]),
                                  raw["transformer_blocks.0.attn1.to_q.scale_weight"])
    conv = np.asarray(raw["transformer_blocks.0.ff.conv_temp.weight"])  # (out, in, 3, 1) → (3, in, out)
    np.testing.assert_array_equal(np.asarray(model.blocks.ff.conv_temp[...][0]).view(np.uint8),
                                  conv[..., 0].transpose(2, 1, 0).view(np.uint8))
    np.testing.assert_array_equal(np.asarray(model.blocks.ff.conv_temp_scale[...][0]),
                                  raw["transformer_blocks.0.ff.conv_temp.scale_weight"])
    converters.save_orbax(model, tmp_path / "orbax")
    assert json.loads((tmp_path / "orbax" / "sana_jax.json").read_text())["weights"] == "fp8"
    again = converters.load(tmp_path / "orbax")
    for a, b in zip(jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(again))):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a).view(np.uint8), np.asarray(b).view(np.uint8))
    out = open_safetensors(converters.export_safetensors(again, tmp_path / "st") /
                           "diffusion_pytorch_model.safetensors")
    assert out.dtype("transformer_blocks.0.attn1.to_q.weight") == q.dtype
    np.testing.assert_array_equal(np.asarray(out["transformer_blocks.0.attn1.to_q.weight"]).view(np.uint8),
                                  q.view(np.uint8))
    assert out.shape("transformer_blocks.1.attn1.to_q.weight_scale") == (32,)  # the bf16 block, quantised
    np.testing.assert_array_equal(np.asarray(converters.load(tmp_path / "st", weights="fp8")(*x)),
                                  np.asarray(model(*x)))
    with pytest.raises(ConfigError, match="loads as saved"):
        converters.load(tmp_path / "orbax", weights="int8")


def test_int8_file_per_channel_and_convert_command(tmp_path, capsys):
    """An int8 file (``(out, 1)`` scales): dequantised it matches the reference; ``sana-jax convert --weights int8``
    keeps its bytes (orbax manifest ``weights``), and so does ``converters.load(weights="int8")``."""
    from sana_jax.cli import main

    ref = make_reference(**tiny_kwargs(in_channels=16))
    folder = tmp_path / "transformer"
    folder.mkdir()
    ref.save_config(folder)
    true = write_quantized(ref.state_dict(), folder / "diffusion_pytorch_model.safetensors", dtype=torch.int8,
                           per_channel=True, input_scale=True,
                           quantize=lambda n: not n.startswith(("patch_embedding", "proj_out")))
    x = inputs(16, (5, 6, 10))
    check(converters.load(folder)(*x), run_with(ref, true, run_reference, *x), what="int8 file, dequantised")
    assert main(["convert", str(folder), str(tmp_path / "orbax"), "--weights", "int8", "-q"]) == 0
    assert "int8 Linear weights" in capsys.readouterr().out
    model = converters.load(tmp_path / "orbax")
    raw = open_safetensors(folder / "diffusion_pytorch_model.safetensors")
    np.testing.assert_array_equal(np.asarray(model.blocks.ff.conv_inverted.kernel[...][1]),
                                  np.asarray(raw["transformer_blocks.1.ff.conv_inverted.weight"])[:, :, 0, 0].T)
    assert model.proj_out.kernel[...].dtype == np.int8  # a float weight of the file, quantised while loading


# -- LTX-2 refiner: ltx-core's native fp8 file ----------------------------------------------------------------------

#: what ltx-core's fp8 files leave in bf16 (ltx_core.quantization.fp8_scaled_mm.EXCLUDED_LAYER_SUBSTRINGS, for 2 layers)
LTX_BF16 = ("patchify_proj", "adaln_single", "caption_projection", "proj_out", "transformer_blocks.0.")


@pytest.fixture(scope="module")
def ltx_fp8(tmp_path_factory):
    """The tiny LTX-2 reference as a native single file: fp8 Linear weights with 0-d ``weight_scale`` and
    ``input_scale`` (ltx-core's FP8Linear), the excluded layers and the first block in bf16, a VAE tensor beside."""
    pytest.importorskip("ltx_core")
    ref = ltx_reference()
    _, native = _native_state_dict(ref)
    path = tmp_path_factory.mktemp("ltx_fp8") / "ltx-2-tiny-fp8.safetensors"
    prefix = "model.diffusion_model."

    def excluded(name):
        return name.startswith(prefix) and any(s in name for s in LTX_BF16) and name.endswith((".weight", ".bias"))

    true = write_quantized({k: torch.from_numpy(v) for k, v in native.items()}, path, input_scale=True,
                           bf16=excluded, quantize=lambda n: n.startswith(prefix + "transformer_blocks."),
                           extra={"vae.encoder.conv_in.conv.weight": torch.zeros(4, 3, 3, 3, 3)},
                           metadata={"config": json.dumps({"transformer": NATIVE_CONFIG})})
    from converters import tables
    from converters import ltx2_transformer as conv

    renamed = tables.RenamedSource(true, conv.native_renames(), "native")  # back to diffusers names
    x = ltx_inputs()
    sig = np.array([0.9, 0.4], np.float32)
    return ref, path, {k: renamed[k] for k in renamed}, x, sig


@pytest.mark.parametrize("weights", [None, "fp8"])
def test_ltx2_fp8_release_layout_with_lora(ltx_fp8, weights, tmp_path):
    """The native fp8 file with a LoRA fused while it streams in (ltx-core naming) loads dequantised (asked float32
    here) and, with ``weights="fp8"``, keeps the file's fp8 values where the LoRA does not touch them (the fused
    weight is quantised anew): both equal diffusers run on the weights they stand for."""
    ref, path, true, x, sig = ltx_fp8
    rng = np.random.default_rng(5)
    down, up = rng.standard_normal((2, 32)).astype(np.float32), rng.standard_normal((32, 2)).astype(np.float32)
    lora = {"diffusion_model.transformer_blocks.1.attn1.to_q.lora_A.weight": down,
            "diffusion_model.transformer_blocks.1.attn1.to_q.lora_B.weight": up}
    model = converters.load(path, component="ltx2_transformer", dtype="float32", weights=weights,
                            loras=[(lora, 0.05)])
    fused = "transformer_blocks.1.attn1.to_q.weight"
    expected = {**true, fused: true[fused] + 0.05 * up @ down}
    values = expected if weights is None else true_weights(model, tmp_path)
    if weights == "fp8":
        np.testing.assert_array_equal(values["transformer_blocks.1.ff.net.2.weight"],
                                      true["transformer_blocks.1.ff.net.2.weight"])  # the file's fp8, unchanged
        assert np.abs(values[fused] - expected[fused]).max() <= np.abs(expected[fused]).max() / 16  # fp8 rounding
    video, audio, vtext, atext, mask = x
    got = model(video, audio, vtext, atext, sig, fps=16.0, video_text_mask=mask, audio_text_mask=mask)
    check_both(got, run_with(ref, values, run_ltx, *x, sig), what=f"LTX-2 fp8 file + LoRA, weights={weights}")


def test_ltx2_default_dtype_is_the_files_bf16(ltx_fp8):
    _, path, _, _, _ = ltx_fp8
    source = converters.open_checkpoint(path)
    assert source.dtype("model.diffusion_model.transformer_blocks.1.attn1.to_q.weight") == np.dtype(ml_dtypes.bfloat16)
    assert not any(k.endswith(("_scale", "input_scale")) for k in source)


# -- errors ---------------------------------------------------------------------------------------------------------

F8 = ml_dtypes.float8_e4m3fn
W = np.ones((4, 3), F8)
BAD = {
    "a scale without its weight": ({"a.weight_scale": np.float32(1)}, r"a\.weight_scale: a scale without its weight"),
    "an fp8 weight without its scale": ({"a.weight": W, "a.weight_scale": np.float32(1), "b.weight": W},
                                        r"b\.weight: a float8_e4m3fn weight without its weight_scale"),
    "an int8 weight without a scale": ({"a.weight": np.ones((4, 3), np.int8)}, r"a\.weight: a int8 weight"),
    "two scales": ({"a.weight": W, "a.weight_scale": np.float32(1), "a.scale_weight": np.float32(1)},
                   r"a\.weight: two scales"),
    "block scales": ({"a.weight": W, "a.weight_scale": np.ones((4, 3 // 1 + 1), np.float32)},
                     r"a\.weight_scale: scale of shape \(4, 4\) fits neither"),
    "an input scale without its weight": ({"a.input_scale": np.float32(1)}, r"a\.input_scale: a scale without"),
    "a ComfyUI format not supported": ({"a.weight": W, "a.weight_scale": np.float32(1),
                                        "a.comfy_quant": np.frombuffer(b'{"format": "nvfp4"}', np.uint8)},
                                       r"a\.comfy_quant: ComfyUI layer format 'nvfp4'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_quantised_files_name_the_tensor(case, tmp_path):
    tensors, message = BAD[case]
    save_safetensors(tensors, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match=message):
        converters.open_checkpoint(tmp_path / "bad.safetensors")


def test_unscaled_fp8_file_is_taken_as_it_is_and_bad_weights_option():
    """An fp8 file without any scale (ltx-core's fp8_cast, ComfyUI's plain fp8) holds the weights themselves."""
    source = quantized.dequantized({"a.weight": W * 2, "a.bias": np.ones(4, np.float32)}, "cast")
    np.testing.assert_array_equal(source["a.weight"], np.full((4, 3), 2, np.float32))
    assert source.quantization("a.weight") is None
    with pytest.raises(InputError, match="weights='int4'"):
        converters.load("anything", weights="int4")

"""What ``bench/gpu.py`` builds: the sizes of each part (full, and tiny for ``--dry-run``), device peaks, random
full-size models drawn on the device, the same weights handed to diffusers, and the T2V stand-in tokenizer."""

from __future__ import annotations

import dataclasses
import re
import tempfile
from pathlib import Path

import numpy as np

# Dense bf16 tensor-core peak (TFLOP/s) and HBM bandwidth (TB/s) per device kind, from NVIDIA's data sheets; the
# first entry whose pattern is found in JAX's ``device_kind`` applies (PCIe and NVL before the SXM parts).
PEAKS = (("H100 PCIe", 756.0, 2.0), ("H100 NVL", 835.0, 3.9), ("H200 NVL", 835.0, 4.8), ("H100", 989.0, 3.35),
         ("H200", 989.0, 4.8))


def device_peaks(kind: str, tflops: float | None = None, bandwidth: float | None = None) -> dict:
    """Peak bf16 TFLOP/s and HBM TB/s for a JAX device kind: ``--peak-tflops`` / ``--peak-bandwidth`` when given,
    else the :data:`PEAKS` table, else None (no MFU or roofline fraction is reported)."""
    row = next((r for r in PEAKS if r[0].lower() in kind.lower()), None)
    return {"peak_bf16_tflops": tflops if tflops is not None else (row[1] if row else None),
            "peak_hbm_tbps": bandwidth if bandwidth is not None else (row[2] if row else None),
            "peak_source": {"tflops": "--peak-tflops" if tflops is not None else (f"table: {row[0]}" if row else None),
                            "bandwidth": "--peak-bandwidth" if bandwidth is not None else
                            (f"table: {row[0]}" if row else None)}}


def slug(kind: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", kind.lower()).strip("_") or "unknown"


@dataclasses.dataclass
class Sizes:
    """Everything size-like about the parts. ``est_s``: the seconds a part is expected to take on one H100/H200,
    compilation included (a part starts only with that much of the budget left)."""

    dtype: str
    kernel_grids: dict  # name -> latent grid (T, H, W) of the linear-attention token count
    kernel_heads: tuple[int, int]  # heads, head dim
    kernel_impl: str  # "pallas" on GPU, "interpret" in the dry run
    kernel_options: dict
    dit: object  # SanaVideoConfig (the 720p DiT, shared by the DiT forward and T2V)
    dit_grid: tuple[int, int, int]
    text_len: int
    gemma: object  # GemmaConfig
    vae: object  # LTX2VAEConfig
    vae_dtype: str
    t2v: dict  # frames, height, width, steps, guidance
    refiner: object  # callable video_only -> LTX2TransformerConfig
    refiner_video: dict  # frames, height, width, text_len, fps
    stream_dit: object  # SanaVideoConfig (480p)
    stream_vae: object  # WanVAEConfig
    stream: dict  # height, width, chunk_frames, cold_chunks, warm_chunks, text_len
    repeats: dict
    est_s: dict


def full_sizes() -> Sizes:
    from sana_jax.models.gemma import GemmaConfig
    from sana_jax.models.ltx2_transformer import LTX2TransformerConfig
    from sana_jax.models.sana_video import SanaVideoConfig
    from sana_jax.vae.ltx2 import LTX2VAEConfig
    from sana_jax.vae.wan import WanVAEConfig

    from bench.linear_attention import PRESETS

    return Sizes(
        dtype="bfloat16", kernel_grids={k: PRESETS[k][1] for k in ("480p", "720p", "2k")}, kernel_heads=(20, 112),
        kernel_impl="pallas", kernel_options={},
        dit=SanaVideoConfig.preset("720p"), dit_grid=(11, 22, 40), text_len=300,
        gemma=GemmaConfig.preset("gemma2-2b"), vae=LTX2VAEConfig(timestep_conditioning=False), vae_dtype="bfloat16",
        t2v=dict(frames=81, height=704, width=1280, steps=50, guidance=6.0),
        refiner=lambda video_only: LTX2TransformerConfig.preset("ltx-2.0", video_only=video_only),
        refiner_video=dict(frames=81, height=1408, width=2560, text_len=1024, fps=16.0),
        stream_dit=SanaVideoConfig.preset("480p"), stream_vae=WanVAEConfig(),
        stream=dict(height=480, width=832, chunk_frames=10, cold_chunks=2, warm_chunks=4, text_len=300),
        repeats=dict(kernel=20, dit=10, diffusers=5, vae=3, refiner=3),
        est_s=dict(linear_attention=30, dit_forward=60, t2v=120, vae_decode=60, vae_decode_reused=15,
                   refiner_step=90, streaming=90))


def dry_sizes() -> Sizes:
    """Tiny configurations of the same models for ``--dry-run`` on CPU: every code path, seconds each."""
    from sana_jax.models.gemma import GemmaConfig
    from sana_jax.models.ltx2_transformer import LTX2TransformerConfig
    from sana_jax.models.sana_video import SanaVideoConfig
    from sana_jax.vae.ltx2 import LTX2VAEConfig
    from sana_jax.vae.wan import WanVAEConfig

    dit = dict(num_attention_heads=2, attention_head_dim=16, num_cross_attention_heads=2, cross_attention_head_dim=16,
               cross_attention_dim=32, num_layers=2, caption_channels=32, mlp_ratio=2.0)
    ltx2 = dict(in_channels=32, out_channels=32, num_attention_heads=2, attention_head_dim=16, cross_attention_dim=32,
                audio_in_channels=16, audio_out_channels=16, audio_num_attention_heads=2, audio_attention_head_dim=8,
                audio_cross_attention_dim=16, num_layers=2, caption_channels=32, rope_type="split")
    return Sizes(
        dtype="float32", kernel_grids={"480p": (2, 3, 4), "720p": (2, 2, 4), "2k": (2, 4, 4)}, kernel_heads=(2, 16),
        kernel_impl="interpret", kernel_options={"block_state": 16, "block_out": 16},
        dit=SanaVideoConfig(in_channels=32, out_channels=32, patch_size=(1, 1, 1), sample_size=2, **dit),
        dit_grid=(2, 2, 2), text_len=8,
        gemma=GemmaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=8),
        vae=LTX2VAEConfig(latent_channels=32, block_out_channels=(16, 32, 64, 64), layers_per_block=(1, 1, 1, 1, 1),
                          decoder_block_out_channels=(16, 32, 64), decoder_layers_per_block=(1, 1, 1, 1),
                          timestep_conditioning=False),
        vae_dtype="float32",
        t2v=dict(frames=9, height=64, width=64, steps=2, guidance=6.0),
        refiner=lambda video_only: LTX2TransformerConfig(video_only=video_only, **ltx2),
        refiner_video=dict(frames=9, height=64, width=64, text_len=8, fps=16.0),
        stream_dit=SanaVideoConfig(in_channels=16, out_channels=16, patch_size=(1, 2, 2), sample_size=4, **dit),
        stream_vae=WanVAEConfig(base_dim=8, dim_mult=(1, 2, 2, 2), num_res_blocks=1),
        stream=dict(height=32, width=32, chunk_frames=2, cold_chunks=2, warm_chunks=3, text_len=8),
        repeats=dict(kernel=1, dit=1, diffusers=1, vae=1, refiner=1),
        est_s=dict(linear_attention=5, dit_forward=5, t2v=5, vae_decode=5, vae_decode_reused=1, refiner_step=5,
                   streaming=5))


# -- random weights on the device ---------------------------------------------------------------------------------


def parameter_count(family, config) -> int:
    """Values in a model's state, from its abstract shapes (nothing allocated)."""
    return sum(int(np.prod(shape)) for shape, _ in family.abstract(config)[2].values())


def random_model(family, config, dtype: str, seed: int = 0, *, on_device: bool = True):
    """A model of a converter ``family`` with random weights. ``on_device=False``: ``converters.nnx_state.
    random_model`` (NumPy on the host; what the dry run uses, where the device is the host). ``on_device=True``:
    the same scales (matrices and kernels N(0, 1/fan_in), modulation tables N(0, 1/D), 1-D weights 1 + N(0, 0.1²),
    biases N(0, 0.1²); stacked layers per layer) drawn on the default device by a few ``jax.random`` calls in one
    compiled function: one flat draw per group of leaves (the layers of stacked weights one at a time, through
    ``lax.map``), cut into the leaves. NumPy draws ~40 M values/s: minutes for the 2B DiT, most of the budget for
    the 19B refiner; one draw call per leaf takes XLA long to compile."""
    import jax
    import jax.numpy as jnp

    from converters.nnx_state import merge

    if not on_device:
        from converters.nnx_state import random_model as on_host

        return on_host(family, config, seed=seed, dtype=jnp.dtype(dtype))
    dt = jnp.dtype(dtype)
    graphdef, state, targets = family.abstract(config, dt)
    groups: dict = {}  # layers of a stacked group (0: not stacked) -> [[(path, shape of one layer)], ...]
    for path, (shape, _) in sorted(targets.items()):
        stacked = path.split(".")[0] in ("blocks", "layers") and len(shape) > 1
        batches = groups.setdefault(shape[0] if stacked else 0, [[]])
        own = tuple(shape[1:] if stacked else shape)
        if sum(int(np.prod(o)) for _, o in batches[-1]) + int(np.prod(own)) > 2**30:  # one draw's size stays int32
            batches.append([])
        batches[-1].append((path, own))

    def scale(path: str, own: tuple) -> tuple[float, float]:
        if "scale_shift_table" in path:
            return 1 / np.sqrt(own[-1]), 0.0
        if len(own) >= 2:
            return 1 / np.sqrt(np.prod(own[:-1])), 0.0
        return 0.1, (1.0 if path.endswith(("weight", "gamma", "scale")) else 0.0)

    def fill(key, items) -> dict:
        sizes = [int(np.prod(own)) for _, own in items]
        z = jax.random.normal(key, (sum(sizes),), jnp.float32)
        out, at = {}, 0
        for (path, own), size in zip(items, sizes):
            mul, add = scale(path, own)
            out[path] = (add + mul * z[at:at + size].reshape(own)).astype(dt)
            at += size
        return out

    @jax.jit
    def init(key):
        out, i = {}, 0
        for layers, batches in sorted(groups.items()):
            for items in batches:
                k, i = jax.random.fold_in(key, i), i + 1
                out.update(fill(k, items) if layers == 0 else
                           jax.lax.map(lambda kk, items=items: fill(kk, items), jax.random.split(k, layers)))
        return out

    return merge(graphdef, state, init(jax.random.key(seed)))


# -- the same weights in diffusers ----------------------------------------------------------------------------------


def torch_tensor(a: np.ndarray):
    """NumPy (bf16 through ml_dtypes) → torch, sharing memory where it can."""
    import ml_dtypes
    import torch

    a = np.require(a, requirements=("C", "W"))  # torch wants writable memory
    if a.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def diffusers_dit(model, device: str):
    """diffusers' ``SanaVideoTransformer3DModel`` holding ``model``'s weights (``converters.sana_video.export``) on
    ``device`` in ``model``'s dtype: built in float32 (as ``bench/dit_forward.py`` does), loaded strictly, cast.
    ImportError when diffusers is not installed."""
    import diffusers
    import torch

    from converters import sana_video

    kwargs = {k: v for k, v in model.config.to_diffusers().items() if not k.startswith("_")}
    with torch.device(device):
        ref = diffusers.SanaVideoTransformer3DModel(**kwargs).eval()
    ref.load_state_dict({k: torch_tensor(v) for k, v in sana_video.export(model).items()}, strict=True)
    return ref.to({"bfloat16": torch.bfloat16, "float32": torch.float32}[np.dtype(model.dtype).name])


def stand_in_tokenizer():
    """The word-level stand-in for Gemma's tokenizer (``bench.pipeline.word_tokenizer``) as a sana-jax
    ``Tokenizer``; the complex-human-instruction words it does not know become ``<unk>`` (same token count)."""
    from bench.pipeline import word_tokenizer
    from sana_jax.text.tokenizer import Tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        word_tokenizer().save(str(Path(tmp) / "tokenizer.json"))
        return Tokenizer.from_folder(tmp)

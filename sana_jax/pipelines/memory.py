"""How much memory a run needs at its peak, estimated from the configs before any weights are loaded, and the
one-line refusal when that is more than the device has (docs/generation.md, "Memory").

    sizes = ModelSizes.of_folder(PipelineFolder.open(folder))   # configs and weight headers: no tensor is read
    estimate = estimate_generation(sizes, num_frames=81, height=480, width=832, guidance_scale=6.0,
                                   dtype="bfloat16", platform="gpu")
    gib(estimate.peak), estimate.what    # the released 480p model: '19.2 GiB', 'denoising 81 frames at 832×480'
    check_folder_generation(folder, num_frames=81, height=480, width=832, guidance_scale=6.0)
                                         # what SanaVideoPipeline.check calls: an InputError with the options that fit

Pure arithmetic on the configs and the parameter counts in the weight files' headers: nothing is allocated (and
nothing traced but, with 8-bit weights, the models' abstract shapes). The peak is the weights plus the largest of the
phases a run goes through, one after the other:

* weights: the DiT and the text encoder in ``dtype`` (with ``weights="fp8"`` / ``"int8"`` their dense kernels in one
  byte per parameter, counted from their configs), the VAE in ``vae_dtype`` (all stay loaded for the run);
* text encoding (on CPU, XLA computes bf16/f16 matmuls in float32 from a float32 copy of the weights);
* denoising: the sampler's float32 latents and the DiT's widest activations per token (the Mix-FFN's, ×2 for
  classifier-free guidance, split by a mesh's ``data``/``context`` axes and the hidden width by ``tensor``);
* VAE decode: its working set per decoded pixel-frame × the pixel-frames in flight (one latent frame at a time
  for Wan, 40-frame chunks for DC-AE-V, the whole clip for LTX-2 and the patch VAE; spatial tiles bound it by
  ``vae_tile``) plus the float32 video it returns;
* frames to uint8 on the host (NumPy: the float32 video, two float32 temporaries and the uint8 result).

The coefficients are XLA's compiled memory plans of the released configs on CPU and the peak resident memory of
real runs, recorded with the script that measured them in ``experiments/memory/``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from sana_jax.errors import InputError
from sana_jax.models.sana_video import SanaVideoConfig
from sana_jax.pipelines.components import VAE_CLASSES, PipelineFolder, frame_rule, latent_frames
from sana_jax.validate import check_integer
from sana_jax.vae import dcae_v, ltx2, wan

GiB = 2**30
_ITEMSIZE = {"float32": 4, "bfloat16": 2, "float16": 2}
#: what the XLA runtime, compiled code and small tables (RoPE, caption keys and values) add at any phase
RUNTIME_BYTES = GiB // 4
#: freed buffers the allocators keep, and a margin: the peak resident memory of real runs on CPU was up to 4 % above
#: the weights plus the largest phase (experiments/memory/results/memory_calibration_cpu.json)
FRAGMENTATION = 1.08


@dataclasses.dataclass(frozen=True)
class ModelSizes:
    """What the estimate needs of a pipeline folder: the DiT's config, the VAE's class and config, the parameter
    counts of ``transformer``, ``text_encoder`` and ``vae``, and (for 8-bit weights) how many of the first two's
    parameters are dense kernels, which ``weights="fp8"`` / ``"int8"`` stores in one byte each."""

    transformer: SanaVideoConfig
    vae_class: str
    vae: object
    params: Mapping[str, int]
    eight_bit: Mapping[str, int] = dataclasses.field(default_factory=dict)

    @classmethod
    def of_folder(cls, folder: PipelineFolder, weights: str | None = None) -> "ModelSizes":
        """From the folder's configs and its weight files' headers (no tensor is read); with ``weights``, the dense
        kernels counted from the configs (``converters.loader.folder_eight_bit_parameters``)."""
        cls_name = folder.class_name("vae")
        config_class = VAE_CLASSES[cls_name][0]  # folder.vae_spec() has refused unknown classes
        vae = config_class.from_diffusers(folder.config("vae"), str(folder.component("vae") / "config.json"))
        transformer = SanaVideoConfig.from_diffusers(folder.config("transformer"),
                                                     str(folder.component("transformer") / "config.json"))
        params = {name: parameter_count(folder.component(name)) for name in ("transformer", "text_encoder", "vae")}
        eight_bit = {}
        if weights is not None:
            from converters.loader import folder_eight_bit_parameters

            eight_bit = {name: folder_eight_bit_parameters(folder.component(name))
                         for name in ("transformer", "text_encoder")}
        return cls(transformer, cls_name, vae, params, eight_bit)


def parameter_count(component: Path) -> int:
    """Parameters in a component folder's safetensors weights, from the headers alone."""
    import converters
    from converters.safetensors_io import open_safetensors

    weights = open_safetensors(converters.weights_file(component))
    return sum(math.prod(weights.shape(name)) for name in weights)


@dataclasses.dataclass(frozen=True)
class Estimate:
    """Bytes at the peak of a run: ``weights`` + the largest ``phases`` entry (bytes on top of the weights, the name
    says what runs: "VAE decode of 81 frames at 480×832"), × :data:`FRAGMENTATION`, + :data:`RUNTIME_BYTES`.
    ``host``: bytes needed in host memory besides (a GPU run's frames converted to uint8; on CPU that phase is one
    of ``phases``)."""

    weights: int
    phases: Mapping[str, int]
    host: int = 0

    @property
    def what(self) -> str:
        return max(self.phases, key=self.phases.get)

    @property
    def peak(self) -> int:
        return int((self.weights + max(self.phases.values())) * FRAGMENTATION) + RUNTIME_BYTES


def itemsize(dtype: str) -> int:
    if dtype not in _ITEMSIZE:
        raise InputError(f"dtype {dtype!r} is not one of {sorted(_ITEMSIZE)}")
    return _ITEMSIZE[dtype]


def gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB"


# -- the DiT -----------------------------------------------------------------------------------------------------


def dit_token_bytes(cfg: SanaVideoConfig, dtype: str, *, kernel: bool, tensor: int = 1) -> int:
    """Bytes per token of the DiT's widest activations. The Mix-FFN's: its 2·hidden-wide tensors (the inverted
    conv's output, the depthwise conv's, the GLU's halves) — about three in the compute dtype and one in float32
    (XLA's plan of the released and the embedded configs: 15.2 bytes per 2·hidden channel in float32, 9.2 in bf16).
    The linear attention's, when wider (a small ``mlp_ratio``): q, k, v in the compute dtype, and with the XLA
    reference path (CPU, a mesh) φ(q), R(φ(q)) and the numerator in float32; the fused kernel keeps those on chip."""
    b = itemsize(dtype)
    mlp = 2 * cfg.ffn_hidden // tensor * (3 * b + 4)
    attention = cfg.inner_dim // tensor * (4 * b if kernel else 3 * b + 12)
    return max(mlp, attention)


def dit_tokens(cfg: SanaVideoConfig, latent_shape: tuple[int, int, int, int]) -> int:
    """Tokens of a (batch, latent frames, latent height, latent width) input."""
    b, t, h, w = latent_shape
    pt, ph, pw = cfg.patch_size
    return b * (t // pt) * (h // ph) * (w // pw)


def kernel_runs(cfg: SanaVideoConfig, platform: str, mesh: Mapping[str, int] | None) -> bool:
    """Whether the fused linear-attention kernel runs (``sana_jax.kernels.dispatch``): on GPU, head dims ≤ 128,
    no mesh (a mesh forces the partitionable XLA reference), unless ``SANA_JAX_LINEAR_ATTENTION`` picks one."""
    from sana_jax.kernels.dispatch import MAX_KERNEL_HEAD_DIM

    forced = os.environ.get("SANA_JAX_LINEAR_ATTENTION", "auto")
    if forced != "auto":
        return forced in ("pallas", "interpret")
    sharded = mesh is not None and math.prod(mesh.values()) > 1
    return platform == "gpu" and not sharded and cfg.attention_head_dim <= MAX_KERNEL_HEAD_DIM


# -- the VAE decode ----------------------------------------------------------------------------------------------

#: per VAE class: (values per decoded pixel-frame on CPU, on GPU, tile overlap in latent pixels or None when the
#: VAE decodes whole). CPU: XLA's plan of the released configs (im2col buffers of its 3-D convolutions included);
#: GPU (cuDNN convolutions, no im2col): ten activations of the widest full-resolution stage, or the CPU figure when
#: that is smaller. Each as a function of the VAE's config, so a smaller or wider variant scales with it.
_DECODERS: dict[str, tuple[Callable, Callable, int | None]] = {
    # Wan: 96 channels (dec_dim) at full resolution; 4.77 MB per latent pixel per decoded latent frame (4 frames)
    wan.DIFFUSERS_CLASS: (lambda c: 48.5 * c.dec_dim, lambda c: 10.0 * c.dec_dim, 8),
    # LTX-2: the last stage runs 128 channels at H/4 × W/4 (8 values a pixel); 1,068 bytes a pixel-frame
    ltx2.DIFFUSERS_CLASS: (lambda c: 33.5 * _ltx2_width(c), lambda c: 10.0 * _ltx2_width(c), 2),
    # DC-AE-V: 128 channels (width_list[0]) at full resolution; 810 bytes a pixel-frame
    dcae_v.CLASS_NAME: (lambda c: 1.58 * c.width_list[0], lambda c: 1.58 * c.width_list[0], 4),
    # the patch VAE: residual 3×3 convs of `hidden_channels` at latent resolution; 4,640 bytes a latent pixel
    "SanaJaxPatchVAE": (lambda c: _patch(c), lambda c: _patch(c), None),
}


def _ltx2_width(cfg) -> float:
    return cfg.decoder_block_out_channels[0] / cfg.upsample_factor[0] / cfg.patch_size ** 2


def _patch(cfg) -> float:
    return 12.1 * cfg.hidden_channels / (cfg.temporal_compression * cfg.spatial_compression ** 2)


def decode_bytes(sizes: ModelSizes, latent: tuple[int, int, int, int], num_frames: int, vae_dtype: str, *,
                 tile: int | None, platform: str) -> int:
    """Bytes of a decode of ``latent`` (batch, frames, height, width) to ``num_frames`` frames, besides the weights:
    the working set of the frames in flight and the float32 video (twice when tiled: the blending accumulator)."""
    b, t, h, w = latent
    cfg, s = sizes.vae, sizes.vae.spatial_compression
    cpu, gpu, overlap = _DECODERS[sizes.vae_class]
    per = (cpu(cfg) if platform == "cpu" else min(cpu(cfg), gpu(cfg))) * itemsize(vae_dtype)
    tiled = tile is not None and overlap is not None and tile < max(h, w)
    th, tw = (min(tile, h), min(tile, w)) if tiled else (h, w)
    frames = num_frames  # the whole clip at once: LTX-2, the patch VAE
    if sizes.vae_class == wan.DIFFUSERS_CLASS:  # one latent frame at a time (its causal cache carried)
        frames = min(num_frames, cfg.temporal_compression)
    elif sizes.vae_class == dcae_v.CLASS_NAME:  # a scan over chunks; XLA keeps about 1.5 chunks live
        frames = min(num_frames, cfg.chunk_frames) * (1.54 if num_frames > cfg.chunk_frames else 1)
    work = b * per * frames * th * s * tw * s
    video = b * num_frames * h * s * w * s * 3 * 4
    if platform == "cpu" and sizes.vae_class == ltx2.DIFFUSERS_CLASS:  # XLA:CPU re-lays out the decoder's weights
        work = max(work, sizes.params["vae"] * itemsize(vae_dtype) / 2)  # (half the VAE's) in buffers reused later
    return int(work) + video * (2 if tiled else 1)


def supports_tiles(sizes: ModelSizes) -> int | None:
    """The overlap of the VAE's decode tiles (a tile must be larger), or None when it decodes whole."""
    return _DECODERS[sizes.vae_class][2]


def uint8_bytes(batch: int, num_frames: int, height: int, width: int) -> int:
    """The decoded video made uint8 with NumPy (``io.video.to_uint8``): the float32 video, two float32
    temporaries of the elementwise steps, and the result."""
    pixels = batch * num_frames * height * width * 3
    return pixels * 4 * 3 + pixels


# -- a whole run -------------------------------------------------------------------------------------------------


def _weights(sizes: ModelSizes, dtype: str, vae_dtype: str, tensor: int = 1, weights: str | None = None) -> int:
    def stored(name: str) -> int:  # 8-bit: the dense kernels in a byte (their scales, 4 bytes a row, are ≪ 1 %)
        dense = sizes.eight_bit.get(name, 0) if weights else 0
        return dense + (sizes.params[name] - dense) * itemsize(dtype)

    return stored("transformer") // tensor + stored("text_encoder") + sizes.params["vae"] * itemsize(vae_dtype)


def cpu_upcast(params: int, dtype: str, platform: str) -> int:
    """XLA:CPU computes bf16/f16 matmuls in float32 from a float32 copy of the weights (8.2 GB for the 2B DiT)."""
    return params * 4 if platform == "cpu" and dtype != "float32" else 0


def estimate_generation(sizes: ModelSizes, *, num_frames: int, height: int, width: int, guidance_scale: float,
                        batch: int = 1, dtype: str = "float32", vae_dtype: str = "float32",
                        vae_tile: int | None = None, mesh: Mapping[str, int] | None = None,
                        platform: str = "cpu", causal_first_frame: bool = True,
                        weights: str | None = None) -> Estimate:
    """The :class:`Estimate` of a ``SanaVideoPipeline`` run (``mesh``: axis sizes, e.g. ``{"context": 4}``;
    ``weights``: ``converters.load``'s, with ``sizes.eight_bit`` filled)."""
    vae = sizes.vae
    mesh = {k: v for k, v in (mesh or {}).items() if v > 1}
    s = vae.spatial_compression
    t = latent_frames(num_frames, vae.temporal_compression, causal_first_frame)
    cfg_batch = batch * (2 if guidance_scale != 1.0 else 1)
    latent_bytes = batch * t * (height // s) * (width // s) * sizes.transformer.in_channels * 4
    split = mesh.get("data", 1) * mesh.get("context", 1)  # the pipeline shards tokens over (data, context)
    tokens = dit_tokens(sizes.transformer, (cfg_batch, t, height // s, width // s)) / split
    per_token = dit_token_bytes(sizes.transformer, dtype, kernel=kernel_runs(sizes.transformer, platform, mesh),
                                tensor=mesh.get("tensor", 1))
    where = f"{num_frames} frames at {width}×{height}"
    phases = {
        "text encoding": cpu_upcast(sizes.params["text_encoder"], dtype, platform),
        # the sampler's float32 latents: x, the solver's state, the guided batch in and out, the velocity
        f"denoising {where}": int(tokens * per_token) + 8 * latent_bytes * cfg_batch // batch
        + cpu_upcast(sizes.params["transformer"], dtype, platform),
        f"VAE decode of {where}": latent_bytes + decode_bytes(sizes, (batch, t, height // s, width // s), num_frames,
                                                              vae_dtype, tile=vae_tile, platform=platform),
    }
    host = uint8_bytes(batch, num_frames, height, width)
    if platform == "cpu":
        phases[f"converting {where} to uint8"] = host
        host = 0
    return Estimate(_weights(sizes, dtype, vae_dtype, mesh.get("tensor", 1), weights), phases, host)


def estimate_stream(sizes: ModelSizes, *, chunks: tuple[int, ...], height: int, width: int, dtype: str = "float32",
                    vae_dtype: str = "float32", platform: str = "cpu", decode_overlap: int = 1,
                    weights: str | None = None) -> Estimate:
    """The :class:`Estimate` of a ``StreamingPipeline`` run: one chunk at a time (the largest, ``chunks`` in latent
    frames) without guidance, the causal DiT's state carried, and the VAE's streaming decode of the chunk."""
    vae, cfg = sizes.vae, sizes.transformer
    s, tc = vae.spatial_compression, vae.temporal_compression
    h, w = height // s, width // s
    n = max(chunks)
    frames_per_latent = h * w // (cfg.patch_size[1] * cfg.patch_size[2])
    # the state: per layer a d×d linear-attention sum per head (float32) and the last frame of the temporal conv
    state = cfg.num_layers * (cfg.num_attention_heads * cfg.attention_head_dim * (cfg.attention_head_dim + 1) * 4
                              + frames_per_latent * cfg.inner_dim * itemsize(dtype))
    tokens = dit_tokens(cfg, (1, n, h, w))
    per_token = dit_token_bytes(cfg, dtype, kernel=kernel_runs(cfg, platform, None))
    window = n  # LTX-2: the first chunk alone, then windows of a chunk, the overlap and an anchor frame
    if sizes.vae_class == ltx2.DIFFUSERS_CLASS:
        window = max(chunks[0], max(chunks[1:], default=0) + decode_overlap + 1)
    frames = tc * window  # a later chunk's frames (the first one's are 1 + tc·(n − 1))
    latent_bytes = n * h * w * cfg.in_channels * 4
    where = f"chunks of {n} latent frames at {width}×{height}"
    phases = {
        "text encoding": cpu_upcast(sizes.params["text_encoder"], dtype, platform),
        f"denoising {where}": int(tokens * per_token) + 8 * latent_bytes + state
        + cpu_upcast(sizes.params["transformer"], dtype, platform),
        f"VAE decode of {where}": state + latent_bytes + decode_bytes(sizes, (1, window, h, w), frames, vae_dtype,
                                                                      tile=None, platform=platform),
    }
    return Estimate(_weights(sizes, dtype, vae_dtype, weights=weights), phases)


# -- what the device has -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Capacity:
    """Free bytes where a run allocates: ``device`` on the default JAX device (named ``name``), ``host`` in system
    memory (the same memory on CPU)."""

    name: str
    platform: str
    device: int
    host: int


def device_memory() -> Capacity:
    """What the default JAX device has free now: on GPU/TPU the allocator's limit (``memory_stats()``
    ``bytes_limit``, the preallocated fraction of the memory) less what is in use; on CPU :func:`host_memory`."""
    import jax

    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    host = host_memory()
    if stats and stats.get("bytes_limit"):
        free = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
        return Capacity(f"{device.platform} ({device.device_kind})", device.platform, free, host)
    return Capacity("cpu", "cpu", host, host)


def _read_numbers(path: Path) -> dict[str, int]:
    """``key value`` lines (``/proc/meminfo``, a cgroup's ``memory.stat``) → {key: value}; {} if unreadable."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        parts = line.replace(":", " ").split()
        if len(parts) >= 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1]) * (1024 if parts[2:] == ["kB"] else 1)
    return out


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 writes "max" for no limit


def host_memory(root: str | Path = "/") -> int:
    """Bytes the system can still give this process: ``MemAvailable`` (+ free swap) from ``/proc/meminfo``, capped
    by the cgroup's limit less its working set (its usage without the reclaimable inactive page cache), cgroup v2
    or v1. ``root``: where ``proc/`` and ``sys/`` are (tests)."""
    root = Path(root)
    info = _read_numbers(root / "proc/meminfo")
    free = info.get("MemAvailable", 0) + info.get("SwapFree", 0)
    for folder, limit, usage, cache in (("sys/fs/cgroup", "memory.max", "memory.current", "inactive_file"),
                                        ("sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes",
                                         "total_inactive_file")):
        cap, used = _read_int(root / folder / limit), _read_int(root / folder / usage)
        if cap is not None and used is not None and cap < 2**60:  # v1 writes ~2^63 for no limit
            left = max(cap - used + _read_numbers(root / folder / "memory.stat").get(cache, 0), 0)
            free = min(free, left) if info else left
    return free


# -- the refusal ---------------------------------------------------------------------------------------------------


def fits(estimate: Estimate, capacity: Capacity) -> bool:
    return estimate.peak <= capacity.device and estimate.host <= capacity.host


def refuse(estimate: Estimate, capacity: Capacity, options: Iterable[tuple[str, Estimate]]) -> InputError:
    """The one-line :class:`InputError` of a run that does not fit: the estimate and what is at its peak, what the
    device has, and the ``options`` (flags → the estimate with them) that fit by the same estimate."""
    fitting = [f"{flag} (≈ {gib(alt.peak)})" for flag, alt in options if fits(alt, capacity)]
    if estimate.peak > capacity.device:
        need = f"this run needs about {gib(estimate.peak)} at its peak ({estimate.what})"
        has = f"{capacity.name} has {gib(capacity.device)} {'available' if capacity.platform == 'cpu' else 'free'}"
    else:
        need = f"this run needs about {gib(estimate.host)} of host memory to convert its frames to uint8"
        has = f"the host has {gib(capacity.host)} available"
    hint = f"options that fit: {', '.join(fitting)}" if fitting else \
        "no single option fits (fewer frames, a smaller size, --vae-tile, --dtype bfloat16): combine them"
    return InputError(f"{need} and {has}; {hint}")


def largest(low: int, high: int, ok: Callable[[int], bool]) -> int | None:
    """The largest k in [low, high] with ``ok(k)`` (``ok`` true up to some k, false after), or None."""
    if low > high or not ok(low):
        return None
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if ok(mid) else (low, mid - 1)
    return low


def mesh_sizes(mesh) -> dict[str, int]:
    """Axis sizes of a mesh given as a ``jax.sharding.Mesh``, a spec (``"data=2,context=4"``), a mapping or None."""
    if mesh is None:
        return {}
    if isinstance(mesh, str):
        from sana_jax.parallel.mesh import parse_mesh_spec

        return parse_mesh_spec(mesh)
    return dict(mesh.shape) if hasattr(mesh, "shape") else dict(mesh)


def _smaller_size(height: int, width: int, step: int, ok: Callable[[int, int], bool]) -> tuple[int, int] | None:
    """The largest (height, width) below the asked one, same aspect ratio, multiples of ``step``, with ``ok``."""
    def size(k):
        return k * step, max(step, round(width * k / height) * step)

    k = largest(1, height // step - 1, lambda k: ok(*size(k)))
    return None if k is None else size(k)


# -- the checks of the pipelines ---------------------------------------------------------------------------------


#: the meshes :func:`check_generation` suggests, fewest devices first
_MESHES = ({"data": 2}, {"context": 2}, {"data": 2, "context": 2}, {"context": 4}, {"data": 2, "context": 4},
           {"context": 8}, {"data": 2, "context": 8})


def check_generation(sizes: ModelSizes, *, num_frames: int, height: int, width: int, guidance_scale: float,
                     valid_frames: tuple[int, int], size_step: int, dtype: str = "float32", vae_dtype: str = "float32",
                     vae_tile: int | None = None, mesh=None, causal_first_frame: bool = True,
                     capacity: Capacity | None = None, weights: str | None = None) -> Estimate:
    """Estimate a ``SanaVideoPipeline`` run against what the device has (:func:`device_memory` unless
    ``capacity``); raise :func:`refuse`'s InputError when it does not fit, with the options that do: a smaller
    ``--vae-tile``, ``--dtype bfloat16``, the most frames (``valid_frames`` = (step, offset): the counts
    offset + step·k), the largest size (multiples of ``size_step``), the smallest mesh (the guided batch over
    ``data``, frames over ``context``; GPU/TPU only: the devices of a CPU share the host's memory)."""
    if vae_tile is not None:
        check_integer("vae_tile", vae_tile, 1)
    capacity = capacity or device_memory()
    mesh = mesh_sizes(mesh)
    request = dict(num_frames=num_frames, height=height, width=width, dtype=dtype, vae_tile=vae_tile, mesh=mesh,
                   weights=weights)

    def run(**change) -> Estimate:
        return estimate_generation(sizes, guidance_scale=guidance_scale, vae_dtype=vae_dtype,
                                   platform=capacity.platform, causal_first_frame=causal_first_frame,
                                   **{**request, **change})

    estimate = run()
    if fits(estimate, capacity):
        return estimate
    options = []
    overlap, s = supports_tiles(sizes), sizes.vae.spatial_compression
    if overlap is not None:
        tiles = [t for t in (64, 32, 16, 8) if overlap < t < max(height, width) // s and t < (vae_tile or 10**9)]
        tile = next((t for t in tiles if fits(run(vae_tile=t), capacity)), None)  # the largest tile that fits
        if tile is not None:
            options.append((f"--vae-tile {tile}", run(vae_tile=tile)))
    if dtype == "float32":
        options.append(("--dtype bfloat16", run(dtype="bfloat16")))
    step, offset = valid_frames
    k = largest(0 if offset else 1, (num_frames - offset) // step - 1,
                lambda k: fits(run(num_frames=offset + step * k), capacity))
    if k is not None:
        options.append((f"--frames {offset + step * k}", run(num_frames=offset + step * k)))
    smaller = _smaller_size(height, width, size_step, lambda h, w: fits(run(height=h, width=w), capacity))
    if smaller is not None:
        options.append((f"--height {smaller[0]} --width {smaller[1]}", run(height=smaller[0], width=smaller[1])))
    frames = latent_frames(num_frames, sizes.vae.temporal_compression, causal_first_frame)
    if capacity.platform != "cpu" and not mesh:  # the smallest mesh that fits: guidance halves over data, frames
        for axes in _MESHES:                     # over context (whole frames: check_divisible)
            if (axes.get("data", 1) == 1 or guidance_scale != 1.0) and frames % axes.get("context", 1) == 0:
                alternative = run(mesh=axes)
                if fits(alternative, capacity):
                    spec = ",".join(f"{k}={v}" for k, v in axes.items())
                    options.append((f"--mesh {spec} over {math.prod(axes.values())} devices", alternative))
                    break
    raise refuse(estimate, capacity, options)


def check_stream_memory(sizes: ModelSizes, *, chunks: tuple[int, ...], height: int, width: int, size_step: int,
                        dtype: str = "float32", vae_dtype: str = "float32",
                        capacity: Capacity | None = None, weights: str | None = None) -> Estimate:
    """Estimate a ``StreamingPipeline`` run against what the device has; when it does not fit, the options are
    smaller chunks (``--chunk-frames``), ``--dtype bfloat16`` and a smaller size."""
    from sana_jax.models.sana_video_causal import split_frames

    capacity = capacity or device_memory()
    request = dict(chunks=chunks, height=height, width=width, dtype=dtype, weights=weights)

    def run(**change) -> Estimate:
        return estimate_stream(sizes, vae_dtype=vae_dtype, platform=capacity.platform, **{**request, **change})

    estimate = run()
    if fits(estimate, capacity):
        return estimate
    options, total = [], sum(chunks)
    k = largest(1, max(chunks[1:] or chunks) - 1,
                lambda k: fits(run(chunks=split_frames(total, k)), capacity))
    if k is not None:
        options.append((f"--chunk-frames {k}", run(chunks=split_frames(total, k))))
    if dtype == "float32":
        options.append(("--dtype bfloat16", run(dtype="bfloat16")))
    smaller = _smaller_size(height, width, size_step, lambda h, w: fits(run(height=h, width=w), capacity))
    if smaller is not None:
        options.append((f"--height {smaller[0]} --width {smaller[1]}", run(height=smaller[0], width=smaller[1])))
    raise refuse(estimate, capacity, options)


def check_folder_generation(folder: PipelineFolder, *, num_frames: int, height: int, width: int,
                            guidance_scale: float, dtype: str = "float32", vae_dtype: str = "float32",
                            vae_tile: int | None = None, mesh=None, weights: str | None = None) -> Estimate:
    """:func:`check_generation` of a checked request on a pipeline folder (``SanaVideoPipeline.check``)."""
    spec, patch = folder.vae_spec(), folder.patch_size()
    return check_generation(ModelSizes.of_folder(folder, weights), num_frames=num_frames, height=height, width=width,
                            guidance_scale=guidance_scale,
                            valid_frames=frame_rule(spec.temporal, patch[0], spec.causal_first_frame),
                            size_step=spec.spatial * max(patch[1:]), dtype=dtype, vae_dtype=vae_dtype,
                            vae_tile=vae_tile, mesh=mesh, causal_first_frame=spec.causal_first_frame, weights=weights)


def check_folder_stream(folder: PipelineFolder, *, chunks: tuple[int, ...], height: int, width: int,
                        dtype: str = "float32", vae_dtype: str = "float32", weights: str | None = None) -> Estimate:
    """:func:`check_stream_memory` of a checked stream request on a pipeline folder (``StreamingPipeline.check``)."""
    spec, patch = folder.vae_spec(), folder.patch_size()
    return check_stream_memory(ModelSizes.of_folder(folder, weights), chunks=chunks, height=height, width=width,
                               size_step=spec.spatial * max(patch[1:]), dtype=dtype, vae_dtype=vae_dtype,
                               weights=weights)


def check_wan_stream(config, *, cache_frames: int, height: int, width: int, dtype: str = "float32",
                     weights: str | None = None) -> Estimate:
    """A Wan student's KV cache (keys and values of ``cache_frames`` latent frames in every layer, ``dtype``) and its
    DiT weights (``weights="fp8"`` / ``"int8"``: the dense kernels in a byte) against what the device has; an
    :class:`InputError` naming both when they do not fit. The chunk's own activations are small beside these at the
    released sizes and are not counted."""
    from converters import wan_transformer
    from converters.loader import eight_bit_parameters

    tokens = (height // 8 // config.patch_size[1]) * (width // 8 // config.patch_size[2])
    per_frame = 2 * config.num_layers * tokens * config.inner_dim * itemsize(dtype)
    params = sum(math.prod(s) for s in wan_transformer.expected_tensors(config).values())
    dense = eight_bit_parameters(wan_transformer, config) if weights else 0
    weight_bytes = dense + (params - dense) * itemsize(dtype)
    estimate = Estimate(weight_bytes, {f"a KV cache of {cache_frames} latent frames": cache_frames * per_frame})
    capacity = device_memory()
    if estimate.peak <= capacity.device:
        return estimate
    raise InputError(f"this stream needs about {gib(estimate.peak)} ({gib(weight_bytes)} of DiT weights and "
                     f"{gib(cache_frames * per_frame)} for {estimate.what}, {gib(per_frame)} per frame) and "
                     f"{capacity.name} has {gib(capacity.device)} free; use --window (and --sink) to keep the cache "
                     "flat, fewer chunks, a smaller size or --dtype bfloat16")

"""What ``sana-jax train distill`` reads from a teacher folder and writes as the student folder, per family.

* :class:`SanaTeacher` — a SANA-Video diffusers pipeline folder (or Hub id). The student folder: the trained
  ``transformer/`` and links to the teacher's text encoder, tokenizer, scheduler and VAE.
* :class:`WanTeacher` — a Wan2.1 folder in the diffusers (``WanPipeline``) or the original layout
  (:class:`~sana_jax.pipelines.wan_components.WanFolder`). Prompts are UMT5-encoded (zero-padded to 512 rows, the
  empty prompt as the unconditional input, as the SANA path and diffusers' ``WanPipeline`` use ``""``). The student
  folder is always a diffusers ``WanPipeline`` folder: from a diffusers teacher, links as for SANA; from an original
  one, the text encoder and VAE exported with ``converters.export_safetensors`` (their ``.pth`` files are not a
  diffusers layout), the tokenizer linked and a flow-UniPC ``scheduler/`` written.

Both write ``_sana_jax.stream`` (chunk size, timesteps, shift, window) into the student's ``model_index.json``,
which ``sana-jax stream --model`` and ``StreamingPipeline.from_pretrained`` / ``from_wan`` read.
Each class checks the request from the configs alone (:meth:`open`), before any weights load.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sana_jax.errors import InputError
from sana_jax.pipelines.components import PipelineFolder, VAESpec, check_video_size, latent_frames, write_pipeline

LINKED = ("text_encoder", "tokenizer", "scheduler", "vae")  # a diffusers teacher's parts the student links to
#: the guidance of the teacher's real score when neither --guidance nor the folder gives one (LongSANA's 3.0)
DEFAULT_GUIDANCE = 3.0


def _linked_student(pf: PipelineFolder, path, model, stream: dict) -> Path:
    index = dict(pf.index)
    index["_sana_jax"] = {**pf.defaults(), "stream": stream}
    return write_pipeline(path, index, model, {name: pf.component(name) for name in LINKED})


class SanaTeacher:
    """A SANA-Video pipeline folder: sizes checked by ``SanaVideoPipeline.check`` (the folder's defaults)."""

    def __init__(self, folder: PipelineFolder, *, frames=None, height=None, width=None, chunk_frames: int = 3):
        from sana_jax.pipelines import SanaVideoPipeline

        del chunk_frames  # any clip splits (the remainder goes to the first chunk)
        self.folder = folder
        request = SanaVideoPipeline.check(folder.root, height=height, width=width, num_frames=frames,
                                          memory=False)  # sizes only: training's memory is not a generation's
        self.latent_shape = folder.latent_shape(1, request.num_frames, request.height, request.width)[1:]
        self.guidance = folder.defaults().get("guidance_scale") or DEFAULT_GUIDANCE
        self.pipe = self.transformer = None

    def load(self, *, progress: bool = True) -> None:
        from sana_jax.pipelines import SanaVideoPipeline

        self.pipe = SanaVideoPipeline.from_pretrained(self.folder.root, progress=progress)
        self.transformer = self.pipe.transformer

    def encode(self, prompts: list[str]) -> tuple[np.ndarray, ...]:
        """(text, mask, null_text, null_mask) as :func:`sana_jax.training.data.encode_captions` gives them."""
        from sana_jax.training.data import encode_captions

        return encode_captions(self.pipe, prompts)

    def write_student(self, path, model, stream: dict) -> Path:
        return _linked_student(self.folder, path, model, stream)


#: a student folder's ``model_index.json`` components (diffusers' ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``)
WAN_INDEX = {"_class_name": "WanPipeline", "scheduler": ["diffusers", "UniPCMultistepScheduler"],
             "text_encoder": ["transformers", "UMT5EncoderModel"], "tokenizer": ["transformers", "T5TokenizerFast"],
             "transformer": ["diffusers", "WanTransformer3DModel"], "vae": ["diffusers", "AutoencoderKLWan"]}
#: the scheduler written for an original-layout teacher: diffusers' flow UniPC with the shift of Wan's
#: ``generate.py`` for text-to-video (5.0); streaming does not read it (it runs ``_sana_jax.stream``'s schedule)
WAN_SCHEDULER = {"_class_name": "UniPCMultistepScheduler", "prediction_type": "flow_prediction",
                 "use_flow_sigmas": True, "flow_shift": 5.0, "num_train_timesteps": 1000, "solver_order": 2,
                 "solver_type": "bh2", "predict_x0": True, "lower_order_final": True, "final_sigmas_type": "zero"}
#: Wan2.1's VAE: 4× in time (1 + 4k frames), 8× in space; the original layout's ``Wan2.1_VAE.pth`` has no config
WAN_VAE = VAESpec(4, 8, True)


class WanTeacher:
    """A Wan2.1 folder (either layout). Sizes: the arguments, else a diffusers folder's ``_sana_jax`` defaults, else
    ``WanPipeline``'s (480×832, 81 frames = 21 latent frames); the latent frames must be a multiple of
    ``chunk_frames`` (the Wan students' aligned chunks)."""

    def __init__(self, folder, *, frames=None, height=None, width=None, chunk_frames: int = 3):
        from sana_jax.models.wan import WanConfig
        from sana_jax.pipelines.wan import WAN_DEFAULTS

        self.folder = folder  # a WanFolder
        self.pf = PipelineFolder.open(folder.root) if folder.layout == "diffusers" else None
        stored = self.pf.defaults() if self.pf else {}
        config = WanConfig.from_diffusers(folder.transformer_config(), str(folder.transformer / "config.json"))
        if config.patch_size[0] != 1:
            raise InputError(f"{folder.root}: a temporal patch of {config.patch_size[0]}; the causal Wan students "
                             "need 1")
        vae = self.pf.vae_spec() if self.pf else WAN_VAE
        num_frames = frames or stored.get("num_frames") or WAN_DEFAULTS["num_frames"]
        height = height or stored.get("height") or WAN_DEFAULTS["height"]
        width = width or stored.get("width") or WAN_DEFAULTS["width"]
        check_video_size(height, width, num_frames, vae.temporal, vae.spatial, config.patch_size,
                         causal_first_frame=vae.causal_first_frame)
        t = latent_frames(num_frames, vae.temporal, vae.causal_first_frame)
        if t % chunk_frames:
            near = [vae.temporal * (k * chunk_frames - 1) + 1 for k in (max(t // chunk_frames, 1),
                                                                        max(t // chunk_frames, 1) + 1)]
            raise InputError(f"--frames {num_frames} makes {t} latent frames, not a multiple of --chunk-frames "
                             f"{chunk_frames} (a Wan student streams chunks of {chunk_frames} latent frames from "
                             f"frame 0); nearest valid --frames {near[0]} or {near[1]}")
        self.latent_shape = (t, height // vae.spatial, width // vae.spatial, config.in_channels)
        self.guidance = stored.get("guidance_scale") or DEFAULT_GUIDANCE
        self.transformer = None

    def load(self, *, progress: bool = True) -> None:
        import jax.numpy as jnp

        del progress
        self.transformer = self.folder.load_transformer(jnp.float32)  # float32 masters; --dtype is the compute

    def encode(self, prompts: list[str]) -> tuple[np.ndarray, ...]:
        """(text (U, 512, D), mask (U, 512) all ones, null_text (1, 512, D), null_mask): the UMT5 contexts of the
        prompts and of ``""``, 64 prompts at a time, with the text encoder in its stored dtype (released: bf16)."""
        from sana_jax.text.wan_prompt import encode_wan_prompts, prompt_encoder

        encoder, tokenizer = prompt_encoder(self.folder.load_text_encoder(None)), self.folder.load_tokenizer()

        def encode(batch):
            return np.asarray(encode_wan_prompts(batch, tokenizer, encoder), np.float32)

        text = np.concatenate([encode(prompts[i:i + 64]) for i in range(0, len(prompts), 64)])
        null = encode([""])
        return text, np.ones(text.shape[:2], np.int32), null, np.ones(null.shape[:2], np.int32)

    def write_student(self, path, model, stream: dict) -> Path:
        if self.pf is not None:
            return _linked_student(self.pf, path, model, stream)
        import converters

        path = Path(path)  # the original layout: a diffusers folder made of exported parts
        converters.export_safetensors(self.folder.load_text_encoder(None), path / "text_encoder")
        converters.export_safetensors(self.folder.load_vae(None), path / "vae")
        (path / "scheduler").mkdir(parents=True, exist_ok=True)
        (path / "scheduler" / "scheduler_config.json").write_text(json.dumps(WAN_SCHEDULER, indent=2))
        index = {**WAN_INDEX, "_sana_jax": {"stream": stream}}
        return write_pipeline(path, index, model, {"tokenizer": self.folder.tokenizer})


def open_teacher(source: str, **request):
    """The teacher of ``--teacher`` (a folder or a Hub id): :class:`WanTeacher` for a Wan2.1 folder in either layout,
    else :class:`SanaTeacher`. ``request``: ``frames``, ``height``, ``width``, ``chunk_frames`` (checked here)."""
    from sana_jax.pipelines.wan_components import PIPELINE_CLASS, WanFolder, is_wan_folder

    if Path(source).is_dir() and is_wan_folder(source):
        return WanTeacher(WanFolder.open(source), **request)
    folder = PipelineFolder.open(source)  # resolves a Hub id
    if folder.index.get("_class_name") == PIPELINE_CLASS:
        return WanTeacher(WanFolder.open(folder.root), **request)
    return SanaTeacher(folder, **request)

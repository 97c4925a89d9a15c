"""Bad input through the CLI and the Python API: numeric options honoured or refused with their range, non-finite
numbers caught (options, weights, latents), configs that name the file and key, and Ctrl-C during a write.

Every CLI case is refused in one line (the last stderr line names the problem), with a non-zero exit and no
traceback (``tests/bad_inputs.py``); every API case raises the typed error."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal

import numpy as np
import pytest

import converters
from converters.safetensors_io import SafetensorsFile, save_safetensors
from sana_jax.demo import default_model_path
from sana_jax.errors import CheckpointError, ConfigError, InputError, NumericsError
from sana_jax.pipelines import SanaVideoPipeline
from sana_jax.pipelines.stream_chunks import plan_chunks
from sana_jax.pipelines.streaming import StreamingPipeline
from tests.bad_inputs import assert_refused, leftovers, run_cli
from tests.helpers import tiny_model

PROMPT = "a red circle moving left"
DEFAULT = default_model_path()


# -- numeric options: refused at parse time with their range (nothing is loaded) ----------------------------------

OPTION_CASES = [
    (["generate", PROMPT, "--frames", "0"], ("--frames", "≥ 1", "0")),
    (["generate", PROMPT, "--height", "0"], ("--height", "≥ 1")),
    (["generate", PROMPT, "--height", "-64"], ("--height", "≥ 1", "-64")),
    (["generate", PROMPT, "--steps", "0"], ("--steps", "≥ 1")),
    (["generate", PROMPT, "--vae-tile", "-3"], ("--vae-tile", "≥ 1")),
    (["generate", PROMPT, "--guidance", "nan"], ("--guidance", "finite")),
    (["generate", PROMPT, "--guidance", "inf"], ("--guidance", "finite")),
    (["generate", PROMPT, "--guidance", "-2"], ("--guidance", "≥ 0")),
    (["generate", PROMPT, "--seed", str(2**64)], ("--seed", str(2**63 - 1))),
    (["generate", PROMPT, "--seed", "-1"], ("--seed", "≥ 0")),
    (["generate", PROMPT, "--frames", "nine"], ("--frames", "integer", "nine")),
    (["generate", PROMPT, "--motion-score", "-5"], ("--motion-score",)),
    (["generate", PROMPT, "--num-processes", "0"], ("--num-processes",)),
    (["generate", PROMPT, "--dtype", "float8"], ("--dtype", "float8")),
    (["stream", PROMPT, "--fps", "0"], ("--fps", "> 0")),
    (["stream", PROMPT, "--seconds", "inf"], ("--seconds", "finite")),
    (["stream", PROMPT, "--seconds", "0"], ("--seconds", "> 0")),
    (["stream", PROMPT, "--chunks", "0"], ("--chunks", "≥ 1")),
    (["stream", PROMPT, "--window", "0"], ("--window", "≥ 1")),
    (["stream", PROMPT, "--chunk-frames", "0"], ("--chunk-frames", "≥ 1")),
    (["stream", PROMPT, "--image", "a.png", "--video", "b.mp4"], ("--video", "not allowed")),
    (["train", "finetune", "--model", "m", "--data", "d", "--out", "o", "--steps", "10", "--lr", "nan"],
     ("--lr", "finite")),
    (["train", "finetune", "--model", "m", "--data", "d", "--out", "o", "--steps", "0"], ("--steps", "≥ 1")),
    (["train", "finetune", "--model", "m", "--data", "d", "--out", "o", "--steps", "5", "--trainable", "(("],
     ("--trainable", "regular expression")),
    (["train", "finetune", "--model", "m", "--data", "d", "--out", "o", "--steps", "5", "--text-dropout", "1.5"],
     ("--text-dropout", "≤ 1")),
    (["train", "demo", "--out", "o", "--clips", "0"], ("--clips", "≥ 1")),
    (["train", "demo", "--out", "o", "--ema-decay", "1"], ("--ema-decay", "< 1")),
    (["train", "distill", "--teacher", "t", "--out", "o", "--steps", "5", "--critic-updates", "0"],
     ("--critic-updates", "≥ 1")),
    (["cache", "v", "--model", "m", "--out", "o", "--frames", "9", "--height", "64", "--width", "64",
      "--batch-size", "0"], ("--batch-size", "≥ 1")),
    (["refine", "l.npy", "--model", "m", "--prompt", "p", "--vae-tile", "-1"], ("--vae-tile", "≥ 0")),
]


@pytest.mark.parametrize("argv,names", OPTION_CASES, ids=[" ".join(c[0][:1] + c[0][-2:]) for c in OPTION_CASES])
def test_numeric_option_refused_at_parse_time(argv, names, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_refused(argv, capsys, *names, status=2)
    assert leftovers(tmp_path) == []


# -- the Python API honours or refuses what it is given (0 is not "use the default") ------------------------------

@pytest.mark.parametrize("request_,name", [
    ({"num_frames": 0}, "num_frames"), ({"height": 0}, "height"), ({"width": -64}, "width"),
    ({"num_inference_steps": 0}, "num_inference_steps"), ({"guidance_scale": math.nan}, "guidance_scale"),
    ({"num_frames": 9.0}, "num_frames"),
])
def test_generation_request_refused(request_, name):
    with pytest.raises(InputError, match=name):
        SanaVideoPipeline.check(DEFAULT, **request_)


@pytest.mark.parametrize("request_,name", [
    ({"seconds": math.inf}, "seconds"), ({"seconds": math.nan}, "seconds"), ({"num_chunks": 0}, "num_chunks"),
    ({"seconds": 2.0, "fps": 0.0}, "fps"), ({"seconds": 1e12}, "latent frames"),
    ({"seconds": 2.0, "window": 0}, "window"), ({"seconds": 2.0, "chunk_frames": 0}, "chunk_frames"),
])
def test_stream_request_refused(request_, name):
    with pytest.raises(InputError, match=name):
        StreamingPipeline.check(DEFAULT, **request_)


def test_stream_plan_refuses_non_finite_seconds():
    with pytest.raises(InputError, match="seconds must be a finite number"):
        plan_chunks(seconds=math.inf, chunk_frames=3)


# -- configs: the file and the key at fault, never a traceback or another option's name ----------------------------

@pytest.fixture
def model_copy(tmp_path):
    """A copy of the embedded default model's folder to damage."""
    return shutil.copytree(DEFAULT, tmp_path / "model")


def edit_json(path, edit):
    data = json.loads(path.read_text())
    data = edit(data) if edit(data) is not None else data
    path.write_text(json.dumps(data))


def _set(key, value):
    def edit(d):
        d[key] = value
    return edit


def _set_default(key, value):
    def edit(d):
        d["_sana_jax"][key] = value
    return edit


CONFIG_CASES = [
    ("model_index.json", _set_default("num_frames", "nine"), ConfigError, ("_sana_jax.num_frames", "integer")),
    ("model_index.json", _set_default("guidance_scale", -1), ConfigError, ("_sana_jax.guidance_scale", "≥ 0")),
    ("model_index.json", _set("_sana_jax", [1, 2]), ConfigError, ("_sana_jax", "object")),
    ("model_index.json", lambda d: d.pop("vae") and None, CheckpointError, ("lists no 'vae' component",)),
    ("model_index.json", _set("vae", ["sana_jax"]), ConfigError, ("'vae'", "[library, class]")),
    ("transformer/config.json", _set("patch_size", [1, 0, 2]), ConfigError, ("patch_size", "≥ 1")),
    ("transformer/config.json", _set("sample_size", "eight"), ConfigError, ("sample_size", "integer")),
    ("scheduler/scheduler_config.json", _set("num_train_timesteps", -10), ConfigError,
     ("num_train_timesteps", "≥ 1")),
    ("scheduler/scheduler_config.json", _set("flow_shift", math.nan), ConfigError, ("flow_shift", "finite")),
]


@pytest.mark.parametrize("file,edit,error,names", CONFIG_CASES,
                         ids=[f"{c[0]}-{'-'.join(c[3])}" for c in CONFIG_CASES])
def test_bad_folder_config_named(file, edit, error, names, model_copy, capsys, tmp_path):
    edit_json(model_copy / file, edit)
    with pytest.raises(error) as info:
        SanaVideoPipeline.check(model_copy)
    for word in names:
        assert word in str(info.value), str(info.value)
    out = tmp_path / "out.mp4"
    last = assert_refused(["generate", PROMPT, "--model", model_copy, "--out", out, "-q"], capsys, *names)
    assert "--frames" not in last
    assert not out.exists()


@pytest.mark.parametrize("edit,names", [
    (_set("num_attention_heads", -2), ("num_attention_heads", "positive")),
    (_set("num_layers", "six"), ("num_layers", "integer")),
    (_set("norm_eps", math.inf), ("norm_eps", "finite")),
    (lambda d: [d], ("expected a JSON object",)),
], ids=["negative-heads", "string-layers", "inf-eps", "json-list"])
def test_bad_model_config_named(edit, names, model_copy, capsys, tmp_path):
    folder = model_copy / "transformer"
    edit_json(folder / "config.json", edit)
    with pytest.raises(ConfigError) as info:
        converters.load(folder)
    for word in names:
        assert word in str(info.value)
    assert_refused(["convert", folder, tmp_path / "converted"], capsys, *names)
    assert not (tmp_path / "converted").exists()


def test_text_encoder_config_with_a_string_size(model_copy, capsys, tmp_path):
    edit_json(model_copy / "text_encoder" / "config.json", _set("hidden_size", "64"))
    with pytest.raises(ConfigError, match="hidden_size"):
        converters.load(model_copy / "text_encoder")
    assert_refused(["generate", PROMPT, "--model", model_copy, "--out", tmp_path / "o.mp4", "-q"], capsys,
                   "hidden_size")


# -- images ---------------------------------------------------------------------------------------------------------

def test_decompression_bomb_image_refused(capsys, tmp_path, monkeypatch):
    from PIL import Image

    path = tmp_path / "bomb.png"
    Image.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL refuses images over twice this: 4096 px is a bomb
    assert_refused(["generate", PROMPT, "--image", path, "--out", tmp_path / "o.mp4", "-q"], capsys,
                   "--image", "bomb.png")
    assert not (tmp_path / "o.mp4").exists()


def test_image_that_is_not_one(capsys, tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not a picture")
    assert_refused(["generate", PROMPT, "--image", path, "--out", tmp_path / "o.mp4", "-q"], capsys,
                   "--image", "notes.png")


# -- non-finite weights are named while reading -----------------------------------------------------------------------

def _poison(path, value, which=0):
    f = SafetensorsFile(path)
    tensors = {k: np.array(f[k]) for k in f}
    name = sorted(k for k in tensors if tensors[k].dtype.kind == "f")[which]
    tensors[name].reshape(-1)[3] = value
    save_safetensors(tensors, path)
    return name


@pytest.mark.parametrize("component,file,value", [
    ("transformer", "diffusion_pytorch_model.safetensors", np.nan),
    ("vae", "diffusion_pytorch_model.safetensors", np.inf),
    ("text_encoder", "model.safetensors", -np.inf),
])
def test_non_finite_weight_named(component, file, value, model_copy, capsys, tmp_path):
    name = _poison(model_copy / component / file, value)
    with pytest.raises(CheckpointError, match="NaN/Inf") as info:
        converters.load(model_copy / component)
    assert repr(name) in str(info.value)
    out = tmp_path / "o.mp4"
    assert_refused(["generate", PROMPT, "--model", model_copy, "--out", out, "-q"], capsys, name, "NaN/Inf")
    assert not out.exists()


def test_non_finite_weight_in_an_orbax_checkpoint(tmp_path):
    model = tiny_model()
    model.proj_out.kernel[...] = model.proj_out.kernel[...].at[0, 0].set(np.inf)
    path = converters.save_orbax(model, tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="proj_out.kernel"):
        converters.load(path)


def test_convert_of_a_nan_checkpoint_writes_nothing(model_copy, capsys, tmp_path):
    name = _poison(model_copy / "transformer" / "diffusion_pytorch_model.safetensors", np.nan, which=-1)
    dst = tmp_path / "converted"
    assert_refused(["convert", model_copy, dst, "-q"], capsys, name, "NaN/Inf")
    assert not dst.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".converted")]


# -- non-finite latents stop the run before anything is written -------------------------------------------------------

def test_non_finite_latents_stop_generation():
    pipe = SanaVideoPipeline.from_pretrained(DEFAULT)
    shape = pipe.latent_shape(1, 9, 64, 64)
    with pytest.raises(NumericsError, match="denoising"):
        pipe(PROMPT, latents=np.full(shape, np.nan, np.float32), progress=False)
    with pytest.raises(NumericsError, match="VAE decoding"):
        pipe.decode(np.full(shape, np.inf, np.float32))


# -- Ctrl-C during a checkpoint write: one line, exit 130, nothing left ------------------------------------------------

def test_interrupt_during_convert_waits_for_the_write_then_removes_it(capsys, tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    src = converters.export_safetensors(tiny_model(), tmp_path / "transformer")
    finished = []
    wait = ocp.StandardCheckpointer.wait_until_finished

    def interrupted_wait(self):  # Ctrl-C while orbax's threads write
        os.kill(os.getpid(), signal.SIGINT)
        wait(self)
        finished.append(True)

    monkeypatch.setattr(ocp.StandardCheckpointer, "wait_until_finished", interrupted_wait)
    dst = tmp_path / "out"
    code, _, err = run_cli(["convert", src, dst, "-q"], capsys)
    assert code == 130 and err.strip().splitlines() == ["sana-jax convert: interrupted"], err
    assert finished, "the interrupt cut the write short instead of waiting for it"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["transformer"]

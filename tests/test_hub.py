"""Hub ids (``org/name``) resolve through ``huggingface_hub``'s cache (``converters.resolve``), offline: each test
lays out a cache folder as the hub writes it (``models--org--name/snapshots/<rev>/…`` + ``refs/main``) and turns
the hub's offline mode on, so nothing is ever downloaded."""

from __future__ import annotations

import shutil

import pytest

hub_constants = pytest.importorskip("huggingface_hub.constants")

import converters  # noqa: E402
from converters.hub import is_repo_id, resolve  # noqa: E402
from sana_jax import cli  # noqa: E402
from sana_jax.demo import default_model_path  # noqa: E402
from sana_jax.errors import CheckpointError  # noqa: E402
from sana_jax.pipelines import SanaVideoPipeline  # noqa: E402
from sana_jax.pipelines.components import PipelineFolder  # noqa: E402

REPO = "sana-jax-tests/default-model"
REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An offline Hugging Face cache under tmp_path holding the embedded default model as ``REPO``."""
    cache = tmp_path / "hub"
    repo = cache / f"models--{REPO.replace('/', '--')}"
    shutil.copytree(default_model_path(), repo / "snapshots" / REVISION)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads both variables when it is imported (possibly earlier in this process)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    return cache, repo / "snapshots" / REVISION


def test_what_looks_like_a_repo_id():
    assert is_repo_id("Efficient-Large-Model/SANA-Video_2B_480p_diffusers")
    assert is_repo_id("org/model.v2")
    for text in ("model", "/abs/path", "a/b/c", "./a", "../a", "org/..", "a b/c", ""):
        assert not is_repo_id(text), text


def test_local_paths_are_not_looked_up(tmp_path, hub_cache):
    assert resolve(tmp_path) == tmp_path
    missing = tmp_path / "missing" / "folder"
    assert resolve(missing) == missing  # not of the form org/name: the caller reports it missing
    local = tmp_path / "org" / "name"
    local.mkdir(parents=True)
    assert resolve(local) == local


def test_repo_id_resolves_to_the_cached_snapshot(hub_cache):
    _, snapshot = hub_cache
    assert resolve(REPO) == snapshot
    assert resolve(REPO, local_files_only=True) == snapshot
    assert PipelineFolder.open(REPO).root == snapshot
    request = SanaVideoPipeline.check(REPO)  # the folder's stored defaults, from the cache
    assert (request.height, request.width, request.num_frames) == (64, 64, 9)
    vae = converters.load(REPO, component="vae")
    assert type(vae).__name__ == "PatchVAE"


def test_missing_repo_offline_is_a_typed_error(hub_cache):
    cache, _ = hub_cache
    with pytest.raises(CheckpointError, match=r"sana-jax-tests/not-there: .*not in the Hugging Face cache") as e:
        resolve("sana-jax-tests/not-there")
    assert str(cache) in str(e.value) and "offline" in str(e.value)
    with pytest.raises(CheckpointError, match="sana-jax-tests/not-there"):
        converters.load("sana-jax-tests/not-there")
    with pytest.raises(CheckpointError, match="sana-jax-tests/not-there"):
        SanaVideoPipeline.from_pretrained("sana-jax-tests/not-there")


def test_cli_model_takes_a_repo_id(hub_cache, tmp_path, capsys):
    """The id resolves, and the size check runs on the cached folder's configs before any weights load."""
    out = tmp_path / "x.mp4"
    assert cli.main(["generate", "a red circle", "--model", REPO, "--height", "60", "--out", str(out), "-q"]) == 2
    assert "--height 60" in capsys.readouterr().err and not out.exists()
    assert cli.main(["generate", "p", "--model", "sana-jax-tests/not-there", "-q"]) == 2
    assert "not in the Hugging Face cache" in capsys.readouterr().err
    assert cli.main(["refine", "in.npy", "--model", "sana-jax-tests/no-refiner", "--prompt", "p", "-q"]) == 2
    assert "sana-jax-tests/no-refiner" in capsys.readouterr().err

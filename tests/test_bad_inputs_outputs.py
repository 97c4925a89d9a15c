"""Outputs that never lie (issue 26): a destination that cannot be written is refused before any work, an existing
one unless ``--overwrite`` / ``overwrite=True`` (every command alike), a write that fails (a full disk) ends with a
non-zero exit / an ``InputError`` naming the problem and leaves nothing, the written file's frames are counted back
before it is renamed, and two runs writing the same output each end truthfully.

CLI cases run ``sana-jax`` in this process (``tests/bad_inputs.py``: one line, non-zero exit, no traceback); real
subprocesses only where two writers must run at once. A full disk is a small tmpfs mounted for the test (root only;
skipped where mounting is not permitted)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from sana_jax.demo import default_model_path
from sana_jax.errors import InputError
from sana_jax.io import video
from sana_jax.io.video import VideoOutput, VideoWriter, count_frames, read_video, write_video
from tests.bad_inputs import assert_refused, leftovers, run_cli

PROMPT = "a red circle moving left"
DEFAULT = default_model_path()
ROOT = Path(__file__).resolve().parent.parent


def noise_clip(frames: int = 9, size: int = 64, seed: int = 0) -> np.ndarray:
    """Frames that compress badly (~4 KB each at 64×64): a few fill a small disk."""
    return np.random.default_rng(seed).integers(0, 256, (frames, size, size, 3), dtype=np.uint8)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    """A tmpfs mounted at ``path`` for the block; skips the test where mounting is not permitted."""
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> None:
    """Fill the file system of ``folder`` to the last byte."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


class FakeGeneration:
    """Stands in for a loaded ``SanaVideoPipeline`` in the CLI: returns ``frames`` at once (the writing is what is
    tested, not the model)."""

    fps = 8

    def __init__(self, frames: np.ndarray):
        self.frames = frames

    def __call__(self, prompt, **kw):
        return VideoOutput(frames=self.frames[None], latents=np.zeros((1, 1, 1, 1, 1), np.float32), timings={},
                           fps=self.fps)


# -- refused before any work: the format, a folder, an existing file, a parent that cannot be written -------------

COMMANDS = {  # each command's shortest argv before its --out (nothing of it is read before --out is checked)
    "generate": ["generate", PROMPT],
    "stream": ["stream", PROMPT],
    "refine": ["refine", "stage1.npy", "--model", "ltx2", "--prompt", PROMPT],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_a_container_other_than_mp4_is_refused_first(command, tmp_path, capsys):
    assert_refused([*COMMANDS[command], "--out", tmp_path / "clip.gif"], capsys, "--out", "clip.gif", ".mp4")
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_an_existing_folder_is_refused_as_out(command, tmp_path, capsys):
    folder = tmp_path / "clip.mp4"
    folder.mkdir()
    assert_refused([*COMMANDS[command], "--out", folder], capsys, "--out", "is a folder")
    assert leftovers(tmp_path) == ["clip.mp4"]


@pytest.mark.parametrize("command", COMMANDS)
def test_an_existing_file_is_kept_unless_overwrite(command, tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    out.write_bytes(b"an earlier video")
    assert_refused([*COMMANDS[command], "--out", out], capsys, "--out", "exists", "--overwrite")
    assert out.read_bytes() == b"an earlier video" and leftovers(tmp_path) == ["clip.mp4"]


def test_every_command_refuses_an_existing_output_the_same_way(tmp_path, capsys):
    """cache, convert and train demo (folders) share the policy and the words of generate/stream/refine."""
    existing = tmp_path / "existing"
    existing.mkdir()
    cases = [(["cache", tmp_path, "--model", "m", "--out", existing, "--frames", "9", "--height", "64", "--width",
               "64"], "--out"),
             (["convert", "src.safetensors", existing], "destination"),
             (["train", "demo", "--out", existing], "--out")]
    for argv, option in cases:
        assert_refused(argv, capsys, option, str(existing), "exists; pass --overwrite to replace it")
    assert leftovers(existing) == []


def test_a_parent_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("a file")
    assert_refused(["generate", PROMPT, "--out", tmp_path / "notes.txt" / "clip.mp4"], capsys, "--out",
                   "is a file, not a folder")
    assert_refused(["train", "finetune", "--model", "m", "--data", "d", "--out", tmp_path / "notes.txt",
                    "--steps", "1"], capsys, "--out", "is a file")  # a run folder (resumable) cannot be a file
    assert leftovers(tmp_path) == ["notes.txt"]


def test_a_read_only_folder_is_refused_before_any_work(tmp_path, capsys):
    folder = tmp_path / "ro"
    if os.geteuid() == 0:  # root writes through permission bits: a read-only file system it is
        context = tmpfs(folder, "ro,size=16k")
    else:
        folder.mkdir()
        folder.chmod(0o555)
        context = contextlib.nullcontext(folder)
    with context:
        for out in (folder / "clip.mp4", folder / "new" / "clip.mp4"):
            last = assert_refused(["stream", PROMPT, "--out", out], capsys, "--out", "read-only or permission denied")
            assert str(folder) in last
        with pytest.raises(InputError, match="read-only or permission denied"):
            write_video(noise_clip(1), folder / "clip.mp4")
        assert leftovers(folder) == []


def test_side_outputs_follow_the_policy(tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    (tmp_path / "latents.npy").write_bytes(b"earlier")
    assert_refused(["generate", PROMPT, "--out", out, "--save-latents", tmp_path / "latents.npy"], capsys,
                   "--save-latents", "exists", "--overwrite")
    assert_refused(["generate", PROMPT, "--refine", "ltx2", "--out", out, "--side-by-side", out], capsys,
                   "--side-by-side", "same file as --out")
    assert leftovers(tmp_path) == ["latents.npy"]


# -- the Python API: the same policy, typed errors ------------------------------------------------------------------

def test_api_refuses_what_the_cli_refuses(tmp_path):
    clip = noise_clip(2)
    with pytest.raises(InputError, match=r"clip\.gif: the output must be a \.mp4 file"):
        write_video(clip, tmp_path / "clip.gif")
    with pytest.raises(InputError, match="is a folder"):
        write_video(clip, tmp_path)
    first = write_video(clip, tmp_path / "clip.mp4")
    before = digest(first)
    with pytest.raises(InputError, match=r"exists; pass overwrite=True \(--overwrite\) to replace it"):
        VideoOutput(frames=noise_clip(3, seed=1)[None], latents=np.zeros(1), timings={}).save(first)
    assert digest(first) == before
    VideoOutput(frames=noise_clip(3, seed=1)[None], latents=np.zeros(1), timings={}).save(first, overwrite=True)
    assert count_frames(first) == 3 and leftovers(tmp_path) == ["clip.mp4"]
    with pytest.raises(InputError, match="T ≥ 1"):
        write_video(clip[:0], tmp_path / "empty.mp4")
    assert leftovers(tmp_path) == ["clip.mp4"]


def test_same_frames_same_bytes_and_what_was_written_reads_back(tmp_path):
    clip = noise_clip(5, size=32)
    a = write_video(clip, tmp_path / "a.mp4", fps=8)
    b = write_video(clip, tmp_path / "b.mp4", fps=8)
    assert digest(a) == digest(b)
    assert count_frames(a) == 5 and read_video(a).shape == (5, 32, 32, 3)
    odd = write_video(noise_clip(3, size=33), tmp_path / "odd.mp4")  # odd sides: 4:4:4, still every pixel
    assert read_video(odd).shape == (3, 33, 33, 3)


def test_a_file_cut_short_counts_short(tmp_path):
    """What the writer's read-back relies on: frames whose data is missing from the file are not counted."""
    path = write_video(noise_clip(9), tmp_path / "whole.mp4")
    data = path.read_bytes()
    for keep in (len(data) // 3, 2 * len(data) // 3):
        cut = tmp_path / f"cut{keep}.mp4"
        cut.write_bytes(data[:keep])
        assert count_frames(cut) < 9


def test_a_short_read_back_publishes_nothing(tmp_path, monkeypatch):
    out = tmp_path / "clip.mp4"
    monkeypatch.setattr(video, "count_frames", lambda path: 4)  # as if the file held 4 of its 9 frames
    with pytest.raises(InputError, match="holds 4 of the 9 frames"):
        write_video(noise_clip(9), out)
    assert leftovers(tmp_path) == []


def test_an_exception_while_writing_publishes_nothing(tmp_path):
    out = tmp_path / "clip.mp4"
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(out) as writer:
            writer.append(noise_clip(3))
            raise KeyboardInterrupt  # Ctrl-C in the middle of a clip
    assert leftovers(tmp_path) == []


# -- a full disk: the error surfaces, nothing is left ---------------------------------------------------------------

@pytest.mark.parametrize("when", ["midway", "from the start"])
def test_api_full_disk(tmp_path, when):
    with tmpfs(tmp_path / "small", "size=64k") as disk:
        if when == "from the start":
            fill(disk)
        out = disk / "clip.mp4"
        with pytest.raises(InputError, match="No space left on device"):
            with VideoWriter(out, live=True) as writer:
                for frame in noise_clip(30):  # ~120 KB for a 64 KB disk
                    writer.append(frame)
        assert leftovers(disk, keep=("filler",)) == []


def test_cli_generate_full_disk(tmp_path, capsys, monkeypatch):
    from sana_jax.pipelines import SanaVideoPipeline

    monkeypatch.setattr(SanaVideoPipeline, "from_pretrained",
                        classmethod(lambda cls, *a, **k: FakeGeneration(noise_clip(9))))  # ~40 KB
    with tmpfs(tmp_path / "small", "size=16k") as disk:
        code, out, err = run_cli(["generate", PROMPT, "--out", disk / "clip.mp4", "-q"], capsys)
        assert code == 2 and "Traceback" not in err and "wrote" not in out
        last = err.strip().splitlines()[-1]
        assert "clip.mp4" in last and "No space left on device" in last and "nothing was written" in last
        assert leftovers(disk) == []


def test_cli_stream_full_disk(tmp_path, capsys, monkeypatch):
    from sana_jax.pipelines.stream_chunks import StreamResult
    from sana_jax.pipelines.streaming import StreamingPipeline

    class FakeStream:
        def stream(self, prompt, *, writer, **kw):
            for frame in noise_clip(30):
                writer.append(frame)
            return StreamResult(path=None, frames=30, latent_frames=8, chunks=[], setup_s=0.0, total_s=1.0,
                                time_to_first_frame_s=None, state_bytes=0)

    monkeypatch.setattr(StreamingPipeline, "from_pretrained", classmethod(lambda cls, *a, **k: FakeStream()))
    with tmpfs(tmp_path / "small", "size=64k") as disk:
        last = assert_refused(["stream", PROMPT, "--model", DEFAULT, "--seconds", "1", "--out", disk / "long.mp4",
                               "-q"], capsys, "long.mp4", "No space left on device", "nothing was written")
        assert "wrote" not in last and leftovers(disk) == []


# -- generate end to end: written once, refused, replaced with --overwrite (same seed: same bytes) -----------------

def test_generate_refuses_to_overwrite_and_same_seed_gives_same_bytes(tmp_path, capsys):
    out = tmp_path / "circle.mp4"
    argv = ["generate", PROMPT, "--out", out, "--steps", "4", "-q"]
    code, printed, err = run_cli(argv, capsys)
    assert code == 0, err
    assert f"wrote {out} (9 frames" in printed and count_frames(out) == 9
    first = digest(out)
    code, printed, err = run_cli(argv, capsys)  # refused before loading anything: nothing printed but the line
    assert code == 2 and printed == "" and "exists; pass --overwrite" in err.strip().splitlines()[-1]
    assert digest(out) == first
    code, printed, err = run_cli([*argv, "--overwrite"], capsys)
    assert code == 0, err
    assert digest(out) == first and leftovers(tmp_path) == ["circle.mp4"]


# -- two writers of one output, in two processes ---------------------------------------------------------------------

API_WRITER = """
import sys, time
from pathlib import Path
import numpy as np
from sana_jax.errors import InputError
from sana_jax.io.video import VideoWriter
out, colour, overwrite, meet = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", Path(sys.argv[4])
writer = VideoWriter(out, fps=8, overwrite=overwrite)
writer.append(np.full((6, 32, 32, 3), colour, np.uint8))
(meet / f"ready{colour}").write_text(str(writer.tmp))
while not (meet / "go").exists():
    time.sleep(0.01)
try:
    writer.close()
except InputError as e:
    print(e, file=sys.stderr)
    sys.exit(2)
print("wrote", out)
"""

CLI_WRITER = """
import sys, time
from pathlib import Path
import numpy as np
from sana_jax import cli
from sana_jax.io.video import VideoOutput
from sana_jax.pipelines import SanaVideoPipeline
out, colour, meet = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])

class Generation:  # both runs pass the up-front check before either writes
    fps = 8
    def __call__(self, prompt, **kw):
        (meet / f"ready{colour}").touch()
        while len(list(meet.glob("ready*"))) < 2:
            time.sleep(0.01)
        frames = np.full((1, 9, 64, 64, 3), colour, np.uint8)
        return VideoOutput(frames=frames, latents=np.zeros((1, 1, 1, 1, 1), np.float32), timings={}, fps=8)

SanaVideoPipeline.from_pretrained = classmethod(lambda cls, *a, **k: Generation())
sys.exit(cli.main(["generate", "a red circle moving left", "--out", out, "-q"]))
"""


def start(script: str, *args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def colour_of(path: Path) -> int:
    """Which of the two runs' grey levels (40, 200) fills every frame of ``path``."""
    frames = read_video(path)
    assert frames.shape[0] == count_frames(path)
    level = min((40, 200), key=lambda c: np.abs(frames.astype(int) - c).max())
    assert np.abs(frames.astype(int) - level).max() <= 3, "frames of both runs in one file"
    return level


def wait_for(condition, runs, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline and all(r.poll() is None for r in runs), \
            [r.communicate() for r in runs if r.poll() is not None]
        time.sleep(0.01)


@pytest.mark.parametrize("overwrite", [False, True])
def test_two_api_writers_of_one_file(tmp_path, overwrite):
    out, meet = tmp_path / "same.mp4", tmp_path / "meet"
    meet.mkdir()
    runs = [start(API_WRITER, out, colour, int(overwrite), meet) for colour in (40, 200)]
    wait_for(lambda: len(list(meet.glob("ready*"))) == 2, runs)
    temporaries = {(meet / f"ready{c}").read_text() for c in (40, 200)}
    assert len(temporaries) == 2 and all(Path(t).exists() for t in temporaries)  # one temporary name per run
    (meet / "go").touch()
    ends = [(r.wait(60), *r.communicate()) for r in runs]
    winners = [i for i, (code, _, _) in enumerate(ends) if code == 0]
    assert len(winners) == (2 if overwrite else 1), ends
    for code, printed, err in ends:
        if code:  # the loser says so, and prints no success
            assert "wrote" not in printed and "appeared while this run was writing it" in err.strip().splitlines()[-1]
    assert colour_of(out) in ({40, 200} if overwrite else {(40, 200)[winners[0]]})
    assert count_frames(out) == 6 and sorted(p.name for p in tmp_path.iterdir()) == ["meet", "same.mp4"]


def test_two_cli_runs_with_one_out(tmp_path):
    out, meet = tmp_path / "same.mp4", tmp_path / "meet"
    meet.mkdir()
    runs = [start(CLI_WRITER, out, colour, meet) for colour in (40, 200)]
    ends = [(r.wait(120), *r.communicate()) for r in runs]
    winners = [i for i, (code, _, _) in enumerate(ends) if code == 0]
    assert len(winners) == 1, ends
    for i, (code, printed, err) in enumerate(ends):
        if i in winners:
            assert f"wrote {out}" in printed
        else:  # it found the other's file when it started writing, or when it renamed its own
            assert code == 2 and "wrote" not in printed and "Traceback" not in err
            last = err.strip().splitlines()[-1]
            assert str(out) in last and ("appeared while this run was writing it" in last or "exists" in last)
    assert colour_of(out) == (40, 200)[winners[0]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meet", "same.mp4"]

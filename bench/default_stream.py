"""The embedded streaming default against its teacher, on the 16 held-out colour–shape–direction prompts:

* accuracy (:func:`sana_jax.demo.shapes.measure` with ``wrap=True``: colour and direction both right) of the
  teacher's ``generate`` clips and of the student's streams, over the teacher's length and over a long stream;
* time per frame of ``stream`` (the student, steady state) and of ``generate`` (the teacher, compiled), same run;
* cleanliness per chunk, first to last (:func:`sana_jax.demo.shapes.background_cleanliness`: the share of
  background pixels within 30 levels of the background colour; the worst frame of each chunk), with the teacher's
  clips and the VAE's reconstructions of rendered clips beside it.

    python bench/default_stream.py --teacher FOLDER [--student FOLDER] [--chunks 12]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import device_description, write_result  # noqa: E402

BLACK = (12, 12, 12)  # the background of prompts that name none


def score(videos, prompts) -> dict:
    from sana_jax.demo import shapes

    got = [shapes.measure(v, wrap=True) for v in videos]
    want = [shapes.parse_prompt(p) for p in prompts]
    return {"both": float(np.mean([g == w for g, w in zip(got, want)])),
            "colour": float(np.mean([g[0] == w[0] for g, w in zip(got, want)])),
            "direction": float(np.mean([g[1] == w[1] for g, w in zip(got, want)]))}


def cleanliness(video, frames_per_chunk: list[int]) -> list[float]:
    from sana_jax.demo import shapes

    per_frame = shapes.background_cleanliness(video, BLACK)
    out, start = [], 0
    for n in frames_per_chunk:
        out.append(float(per_frame[start:start + n].min()))
        start += n
    return out


def main(teacher: Path, student: Path, chunks: int) -> None:
    from sana_jax.demo import shapes
    from sana_jax.pipelines import SanaVideoPipeline
    from sana_jax.pipelines.streaming import StreamingPipeline

    prompts = shapes.held_out_prompts()
    gen = SanaVideoPipeline.from_pretrained(teacher)
    frames = gen.defaults["num_frames"]
    clips = [gen(p, seed=i, progress=False).frames[0] for i, p in enumerate(prompts)]  # compiles on the first
    start = time.perf_counter()
    for i, p in enumerate(prompts[:4]):
        gen(p, seed=100 + i, progress=False)
    generate_s_per_frame = (time.perf_counter() - start) / (4 * frames)

    pipe = StreamingPipeline.from_pretrained(student)
    short, long, per_chunk, steady = [], [], [], []
    for i, p in enumerate(prompts):
        chunk_frames = []
        result = pipe.stream(p, num_chunks=chunks, seed=i, writer=_Keep(chunk_frames), progress=False)
        video = np.concatenate(chunk_frames)
        long.append(video)
        short.append(video[:frames])
        per_chunk.append(cleanliness(video, [c.frames for c in result.chunks]))
        if result.steady_fps:
            steady.append(1.0 / result.steady_fps)

    rng = np.random.default_rng(0)
    rendered = np.stack([shapes.render(shapes.random_clip(rng, t, 64, frames, background="black", paths="wrap"),
                                       64, frames) for t in shapes.HELD_OUT])
    recon = gen.decode(gen.encode_video(rendered.astype(np.float32) / 127.5 - 1.0))
    per_chunk = np.asarray(per_chunk)
    result = {
        "device": device_description(), "teacher": str(teacher), "student": str(student),
        "prompts": prompts, "stream_chunks": chunks, "chunk_frames": pipe.chunk_frames,
        "stream_frames": int(long[0].shape[0]), "teacher_frames": frames,
        "accuracy": {"teacher_generate": score(clips, prompts),
                     "student_stream_first_frames": score(short, prompts),
                     "student_stream_whole": score(long, prompts)},
        "seconds_per_frame": {"generate_teacher": generate_s_per_frame,
                              "stream_student_steady": float(np.median(steady)) if steady else None},
        "cleanliness_worst_frame_per_chunk_mean_over_prompts": per_chunk.mean(axis=0).tolist(),
        "cleanliness_worst_frame_per_chunk_min_over_prompts": per_chunk.min(axis=0).tolist(),
        "teacher_cleanliness_worst_frame": float(min(shapes.background_cleanliness(c, BLACK).min() for c in clips)),
        "teacher_cleanliness_mean": float(np.mean([shapes.background_cleanliness(c, BLACK) for c in clips])),
        "vae_reconstruction_cleanliness_worst_frame": float(min(shapes.background_cleanliness(c, BLACK).min()
                                                                 for c in recon)),
    }
    sp = result["seconds_per_frame"]
    if sp["stream_student_steady"]:
        result["stream_speedup_per_frame"] = sp["generate_teacher"] / sp["stream_student_steady"]
    print(f"accuracy {result['accuracy']}\nseconds/frame {sp} speedup {result.get('stream_speedup_per_frame')}\n"
          f"cleanliness per chunk (mean of worst frames) {np.round(per_chunk.mean(axis=0), 3).tolist()}")
    print("wrote", write_result("default_stream_cpu", result))


class _Keep:
    def __init__(self, into: list):
        self.into = into

    def append(self, frames):
        self.into.append(np.asarray(frames))


if __name__ == "__main__":
    import argparse

    from sana_jax.demo import default_stream_model_path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, required=True, help="the bidirectional teacher's pipeline folder")
    parser.add_argument("--student", type=Path, default=default_stream_model_path(),
                        help="the student's pipeline folder (default: the embedded streaming default)")
    parser.add_argument("--chunks", type=int, default=12, help="chunks per stream")
    args = parser.parse_args()
    main(args.teacher, args.student, args.chunks)

"""Wall time of the README's first command: ``sana-jax generate "a blue square moving up"`` with the embedded
default model, in a fresh process (Python start, imports, loading, compiling, text, denoising, decoding, mp4), and
its held-out demo score.

    python bench/default_model.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import device_description, write_result  # noqa: E402


def main() -> None:
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(2):
            out = Path(tmp) / f"square{i}.mp4"
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "sana_jax.cli", "generate", "a blue square moving up",
                                   "--out", str(out), "-q"], capture_output=True, text=True, check=True)
            runs.append({"wall_s": time.perf_counter() - start, "stdout": proc.stdout.strip().splitlines()})
            print(f"run {i}: {runs[-1]['wall_s']:.1f} s; {runs[-1]['stdout'][-1]}")
    from sana_jax.config import read_json
    from sana_jax.demo import default_model_path

    recipe = read_json(default_model_path() / "recipe.json")
    result = {"device": device_description(), "command": "sana-jax generate 'a blue square moving up'",
              "runs": runs, "held_out_score": recipe["quality_on_held_out"]["score"],
              "training_times_s": recipe["times"]}
    print("wrote", write_result("default_model_generate_cpu", result))


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    main()

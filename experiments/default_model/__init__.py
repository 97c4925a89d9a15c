"""Experiments on the embedded default model (not part of the package; see experiments/README.md)."""

from pathlib import Path

#: where the experiments write their JSON logs
RESULTS = Path(__file__).resolve().parent / "results"

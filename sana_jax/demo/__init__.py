"""The embedded default model: a small SANA-Video family trained on procedural coloured shapes, shipped inside the
package so that ``sana-jax generate "a blue square moving up"`` works on a fresh CPU install with no checkpoint;
and the embedded streaming default, a block-causal few-step student distilled from it (in the world where shapes
wrap around the frame), so that ``sana-jax stream "a red circle moving left"`` does too.

``shapes``: the dataset and its read-back measure; ``models``: configurations and folder layout; ``recipe``: how
the weights are made (``sana-jax train demo``).
"""

from pathlib import Path


def default_model_path() -> Path:
    """The pipeline folder of the embedded default model (``sana_jax/default_model``)."""
    return Path(__file__).resolve().parent.parent / "default_model"


def default_stream_model_path() -> Path:
    """The pipeline folder of the embedded streaming default (``sana_jax/default_stream_model``)."""
    return Path(__file__).resolve().parent.parent / "default_stream_model"

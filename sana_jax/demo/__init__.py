"""The embedded default model: a small SANA-Video family trained on procedural coloured shapes, shipped inside the
package so that ``sana-jax generate "a blue square moving up"`` works on a fresh CPU install with no checkpoint.

``shapes``: the dataset and its read-back measure; ``models``: configurations and folder layout; ``recipe``: how
the weights are made (``sana-jax train demo``).
"""

from pathlib import Path


def default_model_path() -> Path:
    """The pipeline folder of the embedded default model (``sana_jax/default_model``)."""
    return Path(__file__).resolve().parent.parent / "default_model"

"""Reading configuration files (shared by every config dataclass's ``from_json``), and option values that the CLI
needs when it builds its parser, which must not import JAX."""

from __future__ import annotations

import json
from pathlib import Path

from sana_jax.errors import ConfigError

#: Training noise-level distributions (:func:`sana_jax.training.flow.sample_sigmas`).
TIMESTEP_SAMPLING = ("logit_normal", "uniform")


def read_config_json(path: str | Path) -> dict:
    """The JSON object in ``path``; a :class:`ConfigError` naming the file if it cannot be read or parsed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data

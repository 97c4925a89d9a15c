"""Reading configuration files (shared by every config dataclass's ``from_json``)."""

from __future__ import annotations

import json
from pathlib import Path

from sana_jax.errors import ConfigError


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

"""Configuration files: :func:`read_json`, the one reader of the JSON object files the package reads (``config.json``,
``model_index.json``, manifests, caches), and :class:`ModelConfig`, the base of every model's config dataclass
(reading and writing its ``config.json``)."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

from sana_jax.errors import ConfigError, SanaJaxError


def read_json(path: str | Path, *, error: type[SanaJaxError] = ConfigError, missing: dict | None = None) -> dict:
    """The JSON object in ``path``. A file that cannot be read or parsed, or that holds something other than an
    object, raises ``error`` naming the file; a missing file gives ``missing`` instead, when it is given."""
    path = Path(path)
    if missing is not None and not path.exists():
        return missing
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:  # ValueError: bad JSON or bad UTF-8
        raise error(f"{path}: cannot read ({e})") from e
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def key_error(source: str, key: str, problem: str) -> ConfigError:
    """The :class:`ConfigError` for ``key`` of the config read from ``source``."""
    return ConfigError(f"{source}: key {key!r}: {problem}")


class ModelConfig:
    """Base of the model config dataclasses: :meth:`from_diffusers` / :meth:`from_json` read a ``config.json``,
    :meth:`to_diffusers` writes one. A subclass is a frozen dataclass whose fields are named as in the reference
    implementation's config; it states only what differs from the plain case, with these class attributes:

    * ``CLASS_NAME``: the ``_class_name`` written and expected (None: the config names no class);
      ``ALSO_READS``: other class names read as this one;
    * ``RENAMED``: ``{key: field}``, keys read as another field (when that field's own key is absent);
    * ``FIXED``: ``{key: value}``, options of the reference that this implementation has only with ``value``:
      written, and a config with another value is refused;
    * ``DERIVED``: ``{key: attribute}``, keys the reference stores that follow from the fields: written, and a config
      whose value disagrees is refused;
    * ``OURS``: sana-jax fields the reference does not have, written only when not at their default (so that an
      exported config keeps the released keys);

    and two hooks: ``_prepare(config, source)`` (the rest of reading: refusing other options, filling defaults that
    follow from other keys) and ``_extra_keys()`` (other keys written, constants the reference expects).

    Reading keeps the keys that are fields; a null is the field's default unless the field may be None. Every value
    is checked against its field's type (a list field also takes one value for every entry, as diffusers allows);
    every error is a :class:`ConfigError` naming the file and, where there is one, the key.
    """

    CLASS_NAME: ClassVar[str | None] = None
    ALSO_READS: ClassVar[tuple[str, ...]] = ()
    RENAMED: ClassVar[Mapping[str, str]] = {}
    FIXED: ClassVar[Mapping[str, Any]] = {}
    DERIVED: ClassVar[Mapping[str, str]] = {}
    OURS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_diffusers(cls, config: Mapping[str, Any], source: str = "config") -> Self:
        """Parse a ``config.json`` dict (``source`` names it in errors), refusing configs of other models and options
        this implementation does not have."""
        if not isinstance(config, Mapping):
            raise ConfigError(f"{source}: expected a JSON object, found {type(config).__name__}")
        config = dict(config)
        name = config.get("_class_name")
        if cls.CLASS_NAME and name is not None and name not in (cls.CLASS_NAME, *cls.ALSO_READS):
            raise key_error(source, "_class_name", f"is a {name} config, not {cls.CLASS_NAME}")
        for old, new in cls.RENAMED.items():
            if old in config and new not in config:
                config[new] = config.pop(old)
        for key, want in cls.FIXED.items():
            if key in config and config[key] != want:
                raise key_error(source, key, f"{_short(config[key])} is not supported (only {want!r})")
        try:
            config = cls._prepare(config, source)
        except ConfigError:
            raise
        except (TypeError, ValueError) as e:  # a value of the wrong kind met by the hook's own reading
            raise ConfigError(f"{source}: {e}") from e
        types_ = _field_types(cls)
        cfg = cls.build({k: v for k, v in config.items()
                         if k in types_ and (v is not None or _admits_none(types_[k]))}, source)
        for key, attribute in cls.DERIVED.items():
            if config.get(key) is not None and config[key] != getattr(cfg, attribute):
                raise key_error(source, key, f"{_short(config[key])} does not match the other keys, which give "
                                             f"{getattr(cfg, attribute)!r}")
        return cfg

    @classmethod
    def from_json(cls, path: str | Path) -> Self:
        """:meth:`from_diffusers` of the ``config.json`` at ``path``."""
        return cls.from_diffusers(read_json(path), source=str(path))

    @classmethod
    def build(cls, fields: Mapping[str, Any], source: str = "config") -> Self:
        """``cls(**fields)`` with each value checked against its field's type: errors (the dataclass's own checks
        too) are :class:`ConfigError` naming ``source`` (and the key when the type is wrong)."""
        types_ = _field_types(cls)
        for key, value in fields.items():
            if key not in types_:
                raise key_error(source, key, f"is not a {cls.__name__} option")
            if not _fits(value, types_[key]):
                raise key_error(source, key, f"expected {_describe(types_[key])}, got {_short(value)}")
            problem = _range_problem(key, value)
            if problem:
                raise key_error(source, key, problem)
        try:
            return cls(**fields)
        except (TypeError, ValueError) as e:  # ConfigError is a ValueError
            raise ConfigError(f"{source}: {e}") from e

    @classmethod
    def _prepare(cls, config: dict, source: str) -> dict:
        """Hook: the config with per-model reading done (refused options raise, derived defaults filled)."""
        return config

    def _extra_keys(self) -> dict[str, Any]:
        """Hook: keys written besides the fields, ``FIXED`` and ``DERIVED``."""
        return {}

    def to_diffusers(self) -> dict[str, Any]:
        """The ``config.json`` dict of this configuration (what :meth:`from_diffusers` reads back)."""
        fields = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)
                  if f.name not in self.OURS or getattr(self, f.name) != f.default}
        head = {"_class_name": self.CLASS_NAME} if self.CLASS_NAME else {}
        derived = {key: getattr(self, attribute) for key, attribute in self.DERIVED.items()}
        return {**head, **self.FIXED, **fields, **derived, **self._extra_keys()}


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _union_args(hint) -> tuple | None:
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else None


def _admits_none(hint) -> bool:
    return type(None) in (_union_args(hint) or ())


def _fits(value, hint) -> bool:
    """``value`` (as JSON gives it) is acceptable for a field annotated ``hint``."""
    if (options := _union_args(hint)) is not None:
        return any(_fits(value, h) for h in options)
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        return all(_fits(v, item) for v in (value if isinstance(value, (list, tuple)) else [value]))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if dataclasses.is_dataclass(hint):  # a nested object: its own class checks it
        return isinstance(value, (hint, Mapping))
    return True


#: integer keys that are sizes (heads, widths, channels, patch, compression …): at least 1. Other integers (layer
#: counts, offsets, token ids) are at least 0, and numbers are finite.
_POSITIVE_KEY = re.compile(r"(heads|_dim|dims|channels|size|compression|factors?|rate|seq_len|_pos|width_list|mult|"
                           r"base_height|base_width|chunk_frames|hop_length)$")


def _range_problem(key: str, value) -> str | None:
    """Why a (type-checked) value is out of range for ``key``, or None; lists are checked entry by entry."""
    for v in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            return f"must be a finite number, got {v}"
        low = 1 if _POSITIVE_KEY.search(key) else 0
        if isinstance(v, int) and v < low:
            return f"must be {'a positive' if low else 'a non-negative'} integer, got {_short(value)}"
    return None


def _describe(hint) -> str:
    if (options := _union_args(hint)) is not None:
        return " or ".join(_describe(h) for h in options)
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        return f"a list of {_PLURALS.get(item, 'objects')} (or one for all)"
    return _NAMES.get(hint, "an object")


_NAMES = {type(None): "null", bool: "true/false", int: "an integer", float: "a number", str: "a string"}
_PLURALS = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _plain(value):
    """A field value as JSON writes it: tuples as lists, nested dataclasses as objects (their ``to_dict()`` when
    they have one)."""
    if dataclasses.is_dataclass(value) and hasattr(value, "to_dict"):
        return value.to_dict()
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value

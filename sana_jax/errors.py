"""Typed errors. Every message names the file, key, shape or argument at fault and what was expected."""


class SanaJaxError(Exception):
    """Base class of every error this package raises on purpose."""


class CheckpointError(SanaJaxError):
    """A checkpoint cannot be read or does not fit the model (missing/extra keys, shapes, corrupt file)."""


class ConfigError(SanaJaxError, ValueError):
    """A configuration is invalid or belongs to another model."""


class InputError(SanaJaxError, ValueError):
    """An argument given by the user (size, frame count, path, dtype) is invalid."""


class NumericsError(SanaJaxError):
    """A computation produced NaN or Inf (from a bad checkpoint, setting or data); the message names the stage."""

"""Stopping a run that diverges: a NaN or infinite loss or gradient norm ends training with a
:class:`~sana_jax.errors.NumericsError` naming the step and its stage, before anything non-finite is saved or
returned for export.

No host sync is added per step: the loop fetches the newest step's metrics at each log or save point, as it did
for its log, and only when one is not finite does it read the held metrics of the steps since the last check, to
name the first bad one. The state itself is checked (one reduction over its floats) before each checkpoint is
written and when training ends, and a restored checkpoint before it is used
(:func:`sana_jax.validate.all_finite`).
"""

from __future__ import annotations

import math

from sana_jax.errors import NumericsError
from sana_jax.validate import all_finite


class DivergenceGuard:
    """The metrics of the steps since the last check, and the checks. ``stage(step)`` names what step ``step``
    (0-based) trains; ``kept()`` says what the run keeps when it stops (e.g. its last checkpoint)."""

    def __init__(self, stage, kept):
        self._stage, self._kept = stage, kept
        self._pending: list[tuple[int, dict]] = []

    def add(self, step: int, metrics: dict) -> None:
        """Hold the (device) metrics of step ``step`` (0-based) until the next :meth:`check`."""
        self._pending.append((step, metrics))

    def check(self) -> dict:
        """The newest step's metrics as floats, or a NumericsError naming the first held step with a non-finite
        metric. Only the newest step is fetched when it is finite: NaN weights stay NaN (and make every later loss
        NaN), so a run that went bad since the last check is bad now; the held steps are read only to name the
        first bad one."""
        pending, self._pending = self._pending, []
        newest = {name: float(v) for name, v in pending[-1][1].items()}
        if all(math.isfinite(v) for v in newest.values()):
            return newest
        step, bad = next((step, bad) for step, held in pending if (bad := _non_finite(held)))  # the newest at last
        raise self.error(step, bad)

    def check_state(self, state: dict, done: int) -> None:
        """A NumericsError if the state after ``done`` steps holds a NaN or an infinity (e.g. an update that
        overflowed on the step whose loss was still finite)."""
        if not all_finite(state):
            raise self.error(done - 1, "the weights or optimiser state hold NaN or infinite values")

    def error(self, step: int, what: str) -> NumericsError:
        return NumericsError(f"training stopped at step {step + 1} ({self._stage(step)} stage): {what}; "
                             f"{self._kept()} (lower the learning rate, or check the data and the starting weights)")


def _non_finite(metrics: dict) -> str:
    """``loss is nan, grad_norm is inf`` for the metrics that are not finite, losses first ("" if none)."""
    values = {name: float(v) for name, v in metrics.items()}
    names = sorted(values, key=lambda name: ("loss" not in name, name))
    return ", ".join(f"{name} is {values[name]}" for name in names if not math.isfinite(values[name]))

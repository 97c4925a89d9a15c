"""``argparse`` types for numeric options: each parses and range-checks at once (:mod:`sana_jax.validate`), so a bad
value ends the command before any work with argparse's one line, e.g. ``argument --frames: must be an integer ≥ 1,
got 0``, and exit status 2.

``type=integer(1)``, ``type=number(0, 1)``, ``type=number(0, low_open=True)``, ``type=SEED``.
"""

from __future__ import annotations

import argparse
import re

from sana_jax.validate import SEED_RANGE, integer_problem, number_problem


def integer(low=None, high=None):
    """An argparse type: an integer in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        problem = integer_problem(value, low, high)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def number(low=None, high=None, *, low_open: bool = False, high_open: bool = False):
    """An argparse type: a finite float in the range (``low_open``: greater than ``low``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        problem = number_problem(value, low, high, low_open=low_open, high_open=high_open)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = "number"
    return parse


def regex(text: str) -> str:
    """An argparse type: a Python regular expression that compiles (kept as text)."""
    try:
        re.compile(text)
    except re.error as e:
        raise argparse.ArgumentTypeError(f"not a valid regular expression ({e}): {text!r}") from None
    return text


#: ``--seed``: what a JAX PRNG key takes
SEED = integer(*SEED_RANGE)
#: counts of steps, frames, chunks, pixels …
POSITIVE = integer(1)
#: rates, shifts, seconds, frame rates …
POSITIVE_NUMBER = number(0, low_open=True)
#: probabilities and shares
FRACTION = number(0, 1)
#: EMA decays
DECAY = number(0, 1, high_open=True)

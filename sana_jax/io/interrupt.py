"""Ctrl-C held back while a block runs, so that a write is never cut in half (``StreamingPipeline.stream`` appends a
chunk's frames to the mp4 inside it)."""

from __future__ import annotations

import contextlib
import signal
import threading


@contextlib.contextmanager
def defer_sigint():
    """Hold SIGINT while the block runs, then raise ``KeyboardInterrupt`` if one arrived. Outside the main thread
    (where Python cannot set signal handlers) or without signal handling (an embedded interpreter) the block runs
    unprotected."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    try:
        previous = signal.signal(signal.SIGINT, lambda *_: received.append(True))
    except ValueError:  # no signal handling here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt

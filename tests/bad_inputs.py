"""Shared by ``tests/test_bad_inputs*.py``: run the CLI in this process and check that a refusal is one clear line.

A refusal: a non-zero exit status, no traceback, and a last stderr line that names the problem (every word of
``names`` appears in it, case-insensitively)."""

from __future__ import annotations

from pathlib import Path

from sana_jax import cli


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``sana-jax ARGV`` run in this process (argparse's exits included)."""
    capsys.readouterr()
    try:
        status = cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse refuses bad options with SystemExit(2)
        status = e.code if isinstance(e.code, int) else 1
    out = capsys.readouterr()
    return status, out.out, out.err


def assert_refused(argv: list[str], capsys, *names: str, status: int | None = None) -> str:
    """Run ``sana-jax ARGV`` and check it is refused in one line naming ``names``; returns that line."""
    code, _, err = run_cli(argv, capsys)
    assert code != 0, f"exit 0 for {argv}: {err}"
    if status is not None:
        assert code == status, (code, err)
    assert "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines, f"nothing on stderr for {argv}"
    last = lines[-1]
    for word in names:
        assert word.lower() in last.lower(), f"{word!r} not in the last line {last!r}"
    return last


def leftovers(folder: str | Path, keep: tuple[str, ...] = ()) -> list[str]:
    """Names in ``folder`` (recursively) other than ``keep``: what a refused command must not leave."""
    folder = Path(folder)
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name not in keep)

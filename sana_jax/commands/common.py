"""Shared by the subcommands."""

DTYPES = ("float32", "bfloat16", "float16")

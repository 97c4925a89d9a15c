"""``sana-jax`` subcommands: each module has ``add_parser(subparsers)`` and ``run(args)``."""

#: The ``--dtype`` choices of the inference commands.
DTYPES = ("float32", "bfloat16", "float16")

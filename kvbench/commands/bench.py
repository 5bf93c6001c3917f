"""`kvbench bench ...` commands (work in progress)."""

import typer

app = typer.Typer(help="Benchmarks", no_args_is_help=True)

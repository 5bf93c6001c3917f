"""`kvbench model ...` commands (work in progress)."""

import typer

app = typer.Typer(help="model commands", no_args_is_help=True)

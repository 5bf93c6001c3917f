"""`kvbench profile ...` commands (work in progress)."""

import typer

app = typer.Typer(help="profile commands", no_args_is_help=True)

"""Top-level `kvbench run / validate / report / compare` commands (work in progress)."""

import typer


def register(app: typer.Typer) -> None:
    """Attach the top-level commands to the root app."""

"""The `kvbench` command line: one typer app, with a sub-app per concern.

Every command module owns its own options; this module only wires them together and turns user
errors (bad files, bad flags, bad settings) into a one-line message and exit code 2.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from connector.config import ConfigError
from kvbench.commands import bench, model, profile, run
from kvbench.errors import UserError

app = typer.Typer(
    name="kvbench",
    help="Benchmark and prove KV-cache offloading: tiers, engines, multi-turn workloads, profiles.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(bench.app, name="bench")
app.add_typer(model.app, name="model")
app.add_typer(profile.app, name="profile")
run.register(app)

_err = Console(stderr=True, highlight=False, soft_wrap=True)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except (UserError, ConfigError) as exc:
        _err.print(f"[bold red]error:[/] {exc}", markup=True)
        sys.exit(2)
    except KeyboardInterrupt:
        _err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()

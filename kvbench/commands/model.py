"""`kvbench model ...`: build the offline models that the engine and the tests serve."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from kvbench.model import PRESETS, get_preset, make_tiny

app = typer.Typer(help="Build offline models (no download needed).", no_args_is_help=True)
_out = Console(highlight=False)


@app.command("make-tiny")
def make_tiny_command(
    out_dir: Annotated[Path, typer.Argument(help="Directory to create (new, empty, or made by kvbench).")],
    preset: Annotated[str, typer.Option(help=f"Model size: {', '.join(PRESETS)}.")] = "tiny",
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
) -> None:
    """Write a small Llama model (tokenizer, chat template, config, random bf16 weights)."""
    spec = get_preset(preset)
    path = make_tiny(out_dir, preset=preset, seed=seed)
    _out.print(
        f"wrote {spec.name} model ({spec.num_hidden_layers} layers, hidden {spec.hidden_size}, "
        f"seed {seed}) to {path}"
    )

"""One module per CLI concern; each exposes a typer `app` (or `register(app)` for top-level commands)."""

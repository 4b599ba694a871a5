"""The `ragstream` command line (typer)."""

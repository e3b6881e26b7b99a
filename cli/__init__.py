"""The `billing` command line (Typer). Thin: every command calls billing_engine."""

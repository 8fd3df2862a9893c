"""The ``medialog`` command line (filled in below)."""

import click


@click.group()
def main() -> None:
    """medialog: event-sourced media backend."""

"""``stackflask new``: API and provider packages, ready to install and test."""

from __future__ import annotations

import click


@click.group()
def new() -> None:
    """Create an API package or a provider package."""

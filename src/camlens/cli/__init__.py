"""The ``camlens`` command."""

from camlens.cli.main import main as main

__all__ = ["main"]

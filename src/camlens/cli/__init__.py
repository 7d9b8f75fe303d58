"""The ``camlens`` command (``camlens.cli.main``); one small module per command parses and prints."""

from camlens.cli.main import main as main

__all__ = ["main"]

"""``camlens serve``: a local web viewer and JSON API for explanations (the optional extra ``camlens[serve]``).

Drop a photo, see the top classes, click one and see every method's map side by side; slide the
overlay's opacity and switch the colour map in the browser (no server call), switch the layer, the
network and counterfactual mode. The maps of the top-k classes come from one batched ``explain`` call
per upload and are kept, so changing the class never runs the model again.

Importing this package needs nothing beyond camlens; FastAPI and uvicorn are imported when the app is
built, and their absence raises a one-line :class:`~camlens.errors.UsageError` naming
``pip install camlens[serve]``.

Example:
    >>> from camlens.serve import add_arguments
    >>> import argparse; parser = argparse.ArgumentParser(); add_arguments(parser)
    >>> parser.parse_args(["--port", "8123"]).port
    8123
"""

from __future__ import annotations

from camlens.serve.main import DEFAULT_HOST as DEFAULT_HOST
from camlens.serve.main import DEFAULT_PORT as DEFAULT_PORT
from camlens.serve.main import add_arguments as add_arguments
from camlens.serve.main import cli_main as cli_main
from camlens.serve.main import create_app as create_app
from camlens.serve.main import main as main
from camlens.serve.main import run as run

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "add_arguments", "cli_main", "create_app", "main", "run"]

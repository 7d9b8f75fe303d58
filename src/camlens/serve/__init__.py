"""``camlens serve``: a local web viewer and JSON API for explanations (the optional extra ``camlens[serve]``).

Drop a photo, see the top classes, click one and see every method's map side by side; slide the
overlay's opacity and switch the colour map in the browser (no server call), switch the layer, the
network and counterfactual mode. The maps of the top-k classes come from one batched ``explain`` call
per upload and are kept, so changing the class never runs the model again.

Importing this package needs nothing beyond camlens; FastAPI and uvicorn are imported when the app is
built, and their absence raises a one-line :class:`~camlens.errors.UsageError` naming
``pip install camlens[serve]``. The command line (``camlens serve``, ``python -m camlens.serve``) is
:mod:`camlens.cli.serve`; this package is the app and the server.
"""

from __future__ import annotations

from camlens.serve.main import DEFAULT_HOST as DEFAULT_HOST
from camlens.serve.main import DEFAULT_PORT as DEFAULT_PORT
from camlens.serve.main import create_app as create_app
from camlens.serve.main import run as run

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "create_app", "run"]

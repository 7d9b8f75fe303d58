"""The Ray Data engine of :func:`camlens.run.run` (``engine="ray"``): it lives in :mod:`camlens.pipeline.engines`;
this module gives its names."""

from __future__ import annotations

from camlens.pipeline.engines import INSTALL as INSTALL
from camlens.pipeline.engines import Explainer as Explainer
from camlens.pipeline.engines import explained_batches as explained_batches
from camlens.pipeline.engines import import_ray as import_ray

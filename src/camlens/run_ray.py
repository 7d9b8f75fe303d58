"""The Ray Data engine of :func:`camlens.run.run` (``engine="ray"``, ``camlens explain --engine ray``).

The driver (the process that called :func:`~camlens.run.run`) lists the files, decides what is left to
do and writes every file and the results table itself, exactly as the local engine does (so resuming,
atomic files and the table are the same). Ray Data does the work in between: the file list becomes a
dataset, and ``map_batches`` runs it through a pool of actors, each of which builds the network once
from its :class:`~camlens.run.NetworkSpec` (never a pickled model), reads and decodes its images,
explains them and encodes the pictures, and sends back slim results with the encoded files. With GPUs
in the cluster and ``device`` ``auto``/``cuda``, each actor takes one GPU.

The images must be readable at the same path on every node (a shared folder); on one machine that is
always so. :func:`ray.init` is called only when Ray is not running yet: it joins the cluster named by
``RAY_ADDRESS``, else starts a local instance (shut down again at the end).
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from camlens.errors import UsageError
from camlens.run import ImageResult, NetworkSpec, RunOptions

INSTALL = "the Ray engine needs Ray: pip install camlens[ray]"


def import_ray() -> Any:
    """``ray`` with Ray Data, or a :class:`UsageError` naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UsageError(INSTALL) from None
    return ray


class Explainer:
    """A Ray actor: builds the network once, then explains batches of ``{path, stem}`` rows."""

    def __init__(self, spec: NetworkSpec, network_name: str, options: RunOptions, device: str) -> None:
        from camlens.run import resolve_device

        self.network = spec.build()
        self.name = network_name
        self.options = options
        self.device = resolve_device(device)
        self.network.model.to(self.device)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        from camlens.run import decode, encode_image_files, explain_batch

        options = self.options
        max_side = None if options.pictures else max(self.network.input_size) * 2
        timings = {"decode": 0.0}
        items = decode(
            [(Path(str(p)), str(s)) for p, s in zip(batch["path"], batch["stem"], strict=True)],
            max_side,
            timings,
            self.network,
        )
        results = explain_batch(self.network, items, options, self.device)
        for r in results:
            if r.ok:
                if options.pictures:
                    r.blobs = encode_image_files(r, self.name, options)
                    r.maps = {}
                    r.compact = None  # the pictures (and maps file) are made: only the blobs travel
                # else the compact maps travel (the photo-size ones are made by the driver only if read)
            r.rgb = None
            r.probabilities = None
        return {"result": np.array([pickle.dumps(r) for r in results], dtype=object)}


def explained_batches(
    spec: NetworkSpec,
    network_name: str,
    todo: list[tuple[Path, str]],
    options: RunOptions,
    workers: int | None,
    timings: dict[str, float],
) -> Iterator[list[ImageResult]]:
    """Explained batches, in input order, from a pool of Ray actors (see the module's docstring)."""
    ray = import_ray()
    if not todo:
        return
    started = False
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        started = True
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        cpus = int(resources.get("CPU", 1))
        use_gpu = options.device != "cpu" and gpus > 0
        if options.device not in ("cpu", "auto") and not use_gpu:
            raise UsageError(f"device {options.device}: the Ray cluster has no GPU; use --device cpu or auto")
        size = workers or (gpus if use_gpu else max(1, cpus // 2))
        data = ray.data.from_items(
            [{"path": str(p), "stem": s} for p, s in todo],
            override_num_blocks=max(1, min(len(todo) // max(options.batch_size, 1), 4 * size)),
        )
        data.context.execution_options.preserve_order = True
        if started:  # camlens prints its own progress: Ray Data's bars and lines would repeat it
            data.context.enable_progress_bars = False
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        explained = data.map_batches(
            Explainer,
            fn_constructor_kwargs={
                "spec": spec,
                "network_name": network_name,
                "options": options,
                "device": "cuda" if use_gpu else "cpu",
            },
            batch_size=options.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=size),
            num_gpus=1 if use_gpu else 0,
            num_cpus=1,
        )
        for batch in explained.iter_batches(batch_size=options.batch_size, batch_format="numpy", prefetch_batches=1):
            yield [pickle.loads(blob) for blob in batch["result"]]
    finally:
        if started and not os.environ.get("CAMLENS_KEEP_RAY"):
            ray.shutdown()

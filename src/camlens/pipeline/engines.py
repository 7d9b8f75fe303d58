"""Engines: where batches are decoded and explained. Each yields explained batches in input order; the run
loop (:mod:`camlens.pipeline.runner`) writes them, whichever engine made them.

``local``: reader threads decode two batches ahead, the model runs in the calling thread. When torch's
threads fill every core of a CPU run (:func:`model_fills_the_cpus`: torch's default on a small machine) the
work goes in phases instead: the next batch is decoded while this one is written, and the model runs alone.
A model whose parallel ops split each op over all the cores waits at every op for the core a reader or an
encoder holds (twice the CPU time the reader takes), so overlapping costs more than it hides there
(``benchmarks/folder_run.py``; BENCHMARKS.md).

``ray`` (``engine="ray"``, ``camlens explain --engine ray``, ``pip install camlens[ray]``):

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
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from camlens.errors import UsageError
from camlens.pipeline.items import ImageResult, NetworkSpec, RunOptions
from camlens.pipeline.sources import decode
from camlens.pipeline.task import CLASSIFICATION, Task
from camlens.pipeline.worker import resolve_device

if TYPE_CHECKING:
    import torch

    from camlens.zoo import Network


ENGINES = ("local", "ray")


def reading_side(network: Network, options: RunOptions) -> int | None:
    """The longer side images are read at: the photo's own with pictures (they are drawn at it); without, at most
    4x the network input's longer side. A photo up to that is read as it is, so its input and maps are the
    pictures run's exactly (an exact resize to the limit costs more than decoding a 512-px JPEG); a larger one
    is decoded at reduced scale where the format allows and fit to it (:func:`camlens.images.read_image`)."""
    return None if options.pictures else max(network.input_size) * 4


def model_fills_the_cpus(device: torch.device) -> bool:
    """Whether the model runs on the CPU with as many torch threads as this process has cores."""
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    return device.type == "cpu" and torch.get_num_threads() >= cores


def explained_local(
    network: Network,
    todo: list[tuple[Path, str]],
    options: RunOptions,
    device: torch.device,
    timings: dict[str, float],
    task: Task = CLASSIFICATION,
    overlap: bool = True,
) -> Iterator[list[ImageResult]]:
    """The local engine: batches decoded two ahead by reader threads, explained here, in input order.

    ``overlap=False`` (phases, see the module doc): one batch is decoded ahead, during the time the caller
    spends between two ``next`` calls (writing the batch yielded last), never while the model runs."""
    max_side = reading_side(network, options)
    task_read = getattr(task, "read", None)  # a task's own reader (clips), else the network's
    size = options.batch_size
    upcoming = (todo[i : i + size] for i in range(0, len(todo), size))
    readers = ThreadPoolExecutor(2, thread_name_prefix="camlens-read")
    decoded: deque[list[tuple[Future[list[tuple[Path, str, Any, Any]]], dict[str, float]]]] = deque()

    def read_next() -> None:
        batch = next(upcoming, None)
        if batch is not None:  # in two halves, one a reader: the first batch is read in half the time
            half = (len(batch) + 1) // 2
            parts = [part for part in (batch[:half], batch[half:]) if part]
            reading = []
            for part in parts:
                spent = {"decode": 0.0}  # one per part (added up here, not from two threads at once)
                reading.append((readers.submit(decode, part, max_side, spent, network, task_read), spent))
            decoded.append(reading)

    try:
        read_next()
        if overlap:
            read_next()
        while decoded:
            items = []
            for future, spent in decoded.popleft():
                items += future.result()
                timings["decode"] += spent["decode"]
            if overlap:
                read_next()
            t = time.perf_counter()
            explained = task.explain_batch(network, items, options, device)
            timings["model"] += time.perf_counter() - t
            if not overlap:
                read_next()  # decoded while the caller writes this batch
            yield explained
    finally:
        readers.shutdown(wait=True, cancel_futures=True)


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

    def __init__(
        self, spec: NetworkSpec, network_name: str, options: RunOptions, device: str, task: Task = CLASSIFICATION
    ) -> None:
        self.task = task
        self.network = spec.build()
        self.name = network_name
        self.options = options
        self.device = resolve_device(device)
        self.network.model.to(self.device)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        options = self.options
        max_side = reading_side(self.network, options)
        timings = {"decode": 0.0}
        items = decode(
            [(Path(str(p)), str(s)) for p, s in zip(batch["path"], batch["stem"], strict=True)],
            max_side,
            timings,
            self.network,
            getattr(self.task, "read", None),
        )
        results = self.task.explain_batch(self.network, items, options, self.device)
        for r in results:
            if r.ok:
                if options.pictures:
                    r.blobs = self.task.files(r, self.name, options)
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
    task: Task = CLASSIFICATION,
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
                "task": task,
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

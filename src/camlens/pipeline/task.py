"""The seam through which a kind of item and target plugs into a folder run (see :mod:`camlens.pipeline`).

A :class:`Task` explains a batch of decoded items into records, names and encodes each record's files,
and gives each record's table row; everything else (sources, decoding, the engines, the run loop, atomic
writes, locking, resuming, the table) is the same for every task. :data:`CLASSIFICATION` is the image
classification task that ``camlens explain`` runs; ``camlens.run.run(..., task=...)`` takes another.

Example:
    >>> CLASSIFICATION.planned_files("cat", "resnet18", RunOptions(methods=("gradcam",)))
    ['cat-resnet18-heatmap.jpg', 'cat-resnet18-cam.jpg']
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from camlens.pipeline.files import batch_maps_file, encode_image_files, planned_files
from camlens.pipeline.items import ImageResult, RunOptions
from camlens.pipeline.worker import explain_batch

if TYPE_CHECKING:
    import torch

    from camlens.zoo import Network


class Task(Protocol):
    """What a folder run needs of a task. Methods run in the calling thread (``explain_batch``), in encoder
    threads or Ray workers (``files``), and in the writer thread (``batch_files``, ``row``); a task object is
    sent to Ray workers, so it must pickle."""

    name: str  # part of the run's key (a table's rows of another task are not this task's)
    # optional: ``targets``, a row field listing an item's targets; the run then also writes <targets>.csv with a
    # row per (item, target) (camlens.pipeline.table.export_targets; camlens.pipeline.targets' tasks)
    # optional: ``collect(paths, recursive, on_note) -> list[Path]``, the items of the files and folders given
    # (default camlens.pipeline.sources.collect_sources: image files), and ``read(network, path, max_side) ->
    # (background, input)``, one item decoded (default Network.read: an image); camlens.pipeline.clips' task

    def explain_batch(
        self, network: Network, items: list[tuple[Any, str, Any, Any]], options: RunOptions, device: torch.device
    ) -> list[ImageResult]:
        """One record per decoded item ``(path, stem, rgb or error text, input or None)``, in order; a bad item
        is a record with ``error`` set, never an exception."""
        ...

    def planned_files(self, stem: str, network: str, options: RunOptions) -> list[str]:
        """The names of an item's files, before anything runs (clash and resume checks, name fitting)."""
        ...

    def files(self, record: ImageResult, network: str, options: RunOptions) -> dict[str, bytes]:
        """An explained item's files (with ``options.pictures``): name -> bytes."""
        ...

    def batch_files(self, records: list[ImageResult], network: str, index: int) -> dict[str, bytes]:
        """A batch's files without pictures (``options.pictures`` False): name -> bytes, shared by the batch."""
        ...

    def row(self, record: ImageResult, network: str, key: str) -> dict[str, Any]:
        """A record's table row: the shared columns (``path``, ``stem``, ``network``, ``status``, ``error``,
        ``files``, ``notes``, ``key``, ``source``) and the task's own."""
        ...


class ImageClassification:
    """Image classification: the explained class's maps for each image, the six pictures, the top-k row."""

    name = "classification"

    def explain_batch(
        self, network: Network, items: list[tuple[Any, str, Any, Any]], options: RunOptions, device: torch.device
    ) -> list[ImageResult]:
        return explain_batch(network, items, options, device)

    def planned_files(self, stem: str, network: str, options: RunOptions) -> list[str]:
        return planned_files(stem, network, options)

    def files(self, record: ImageResult, network: str, options: RunOptions) -> dict[str, bytes]:
        return encode_image_files(record, network, options)

    def batch_files(self, records: list[ImageResult], network: str, index: int) -> dict[str, bytes]:
        return dict([batch_maps_file(records, network, index)])

    def row(self, record: ImageResult, network: str, key: str) -> dict[str, Any]:
        return record.record(network, key)


CLASSIFICATION = ImageClassification()

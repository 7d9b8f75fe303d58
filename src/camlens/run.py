"""Images in, results out: the orchestration that the CLI commands, the viewer and the Ray engine call.

:func:`explain_images` explains decoded images with one network (in memory, nothing written).
:func:`run` streams files through it: decoding runs ahead of the model and encoding behind it in worker
threads, memory stays bounded by the batch and queue sizes whatever the number of files, every picture is
written atomically, one row per image goes to a results table (``results.jsonl``, then ``results.csv``
and, with pyarrow, ``results.parquet``), a bad image is a row with its error (the run goes on), and the
same command run again does only the images the table does not hold yet.

The code lives in :mod:`camlens.pipeline`, one module per job; this module gives its public names.

Example:
    >>> import camlens.run as run                                           # doctest: +SKIP
    >>> net = camlens.load_network()                                        # doctest: +SKIP
    >>> summary = run.run(net, ["examples/"], "results", run.RunOptions())  # doctest: +SKIP
"""

from __future__ import annotations

from camlens.names import SEED_METHODS
from camlens.pipeline.compare import CompareSummary, compare
from camlens.pipeline.engines import ENGINES
from camlens.pipeline.files import (
    LOCK,
    NAME_MAX,
    PARTIAL_SUFFIX,
    caption,
    check_output_dir,
    check_output_free,
    encode_image_files,
    fit_stem,
    lock_output_dir,
    planned_files,
    write_batch_maps,
    write_image_files,
    write_staged,
)
from camlens.pipeline.items import ImageResult, NetworkSpec, RunOptions
from camlens.pipeline.maps import load_maps
from camlens.pipeline.runner import ENCODERS, RunSummary, done_count, progress_printer, run
from camlens.pipeline.sources import check_sources, collect_sources, decode, unique_stems
from camlens.pipeline.table import COLUMNS, JOURNAL, TABLE, export_table, iter_table, read_table
from camlens.pipeline.task import CLASSIFICATION, Task
from camlens.pipeline.worker import check_layer, explain_batch, explain_images, image_metrics, resolve_device

__all__ = [
    "CLASSIFICATION",
    "Task",
    "COLUMNS",
    "CompareSummary",
    "ENCODERS",
    "ENGINES",
    "ImageResult",
    "JOURNAL",
    "LOCK",
    "NAME_MAX",
    "NetworkSpec",
    "PARTIAL_SUFFIX",
    "RunOptions",
    "RunSummary",
    "SEED_METHODS",
    "TABLE",
    "caption",
    "check_layer",
    "check_output_dir",
    "check_output_free",
    "check_sources",
    "collect_sources",
    "compare",
    "decode",
    "done_count",
    "encode_image_files",
    "explain_batch",
    "explain_images",
    "export_table",
    "fit_stem",
    "image_metrics",
    "iter_table",
    "load_maps",
    "lock_output_dir",
    "planned_files",
    "progress_printer",
    "read_table",
    "resolve_device",
    "run",
    "unique_stems",
    "write_batch_maps",
    "write_image_files",
    "write_staged",
]

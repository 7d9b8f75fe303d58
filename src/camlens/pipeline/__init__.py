"""The folder run, one module per job (:mod:`camlens.run` gives the public names of all of them).

Modules, each importing only those above it (no cycles, no function-level imports back up):

* :mod:`~camlens.pipeline.sources`: files and folders to image paths, output stems, the file identity
  a resumed run checks, :func:`~camlens.pipeline.sources.decode` (reader threads, Ray workers);
* :mod:`~camlens.pipeline.items`: what is asked (``RunOptions``, ``NetworkSpec``) and the per-image
  record (``ImageResult``: its table row is ``ImageResult.record``);
* :mod:`~camlens.pipeline.maps`: an image's maps in the compact stored form, back at the photo's size,
  the maps files and :func:`~camlens.pipeline.maps.load_maps`;
* :mod:`~camlens.pipeline.files`: the output folder (checked, locked), file names, atomic writes, one
  image's encoded pictures and maps file, a batch's maps file, staged writes;
* :mod:`~camlens.pipeline.table`: ``results.jsonl`` and its journal, repair after a kill, CSV/Parquet;
* :mod:`~camlens.pipeline.worker`: one decoded batch through one network into records (nothing written);
* :mod:`~camlens.pipeline.task`: the seam for kinds of items and targets (below), and classification's;
* :mod:`~camlens.pipeline.targets`, :mod:`~camlens.pipeline.clips`: the several-targets tasks, the clip task;
* :mod:`~camlens.pipeline.engines`: where batches are decoded and explained (``local`` threads, ``ray``
  actors); each yields explained batches in input order;
* :mod:`~camlens.pipeline.runner`: :func:`~camlens.pipeline.runner.run`, the loop that resumes, drives
  an engine and writes what comes back (files first, then the rows), and the progress line;
* :mod:`~camlens.pipeline.compare`: ``camlens compare`` (every image through every network).

The seam for new tasks (detection, segmentation, text prompts)
---------------------------------------------------------------
Everything but the worker and the per-item files is task-free: sources, decoding, engines, the run
loop, atomic writes, locking, resuming and the table only move *items* (a path and a stem in, a record
out) and *files* (name -> bytes). A new task is one more kind of item and target, plugged in as an
object with these parts (:class:`camlens.pipeline.task.Task`; ``run(..., task=...)``; the
image-classification task, :data:`camlens.pipeline.task.CLASSIFICATION`, is the functions in brackets):

``explain_batch(network, items, options, device) -> list[record]``
    one batch of decoded items ``(path, stem, rgb or error text, input or None)`` to one record per
    item, in order; a bad item is a record with ``error`` set, never an exception
    (:func:`camlens.pipeline.worker.explain_batch`). Targets (a class id, a box, a mask, a text prompt)
    come from the task's own options, and are part of ``RunOptions.key`` so that resuming stays right.
``planned_files(stem, network, options) -> list[str]``
    the names an item's files will get, before anything runs (clash and resume checks, name-length
    fitting) (:func:`camlens.pipeline.files.planned_files`).
``files(record, network, options) -> dict[str, bytes]``
    an item's encoded pictures and maps file, made in the encoder threads or the Ray workers
    (:func:`camlens.pipeline.files.encode_image_files`; ``--no-pictures``: the batch's maps file,
    ``batch_files``: :func:`camlens.pipeline.files.batch_maps_file`).
``row(record, network, key) -> dict``
    the item's table row: the shared columns (``path``, ``stem``, ``network``, ``status``, ``error``,
    ``files``, ``notes``, ``key``, ``source``) plus the task's own (``ImageResult.record``; a detection
    task adds its boxes, a text task its prompts); :data:`camlens.pipeline.table.COLUMNS` and the
    Parquet schema take the task's extra columns.

A record needs ``path``, ``stem``, ``ok``/``error``, ``files``, ``notes`` and ``slim()`` (drop pixels and
maps once written): that is all the run loop, the table and the engines touch. Compact maps
(:class:`~camlens.pipeline.maps.CompactMaps`) already serve any per-item map set (one per box, mask or
prompt: keys ``<stem>/<target>/...``). A task's ``name`` is part of the run's key (resuming never mixes
two tasks' rows). A task may also bring ``collect(paths, recursive, on_note)`` (its items of the files and
folders given) and ``read(network, path, max_side)`` (one item decoded in the reader threads):
:mod:`~camlens.pipeline.clips`' clip task reads videos, folders of frames and volumes so. Not done yet: the
``--no-pictures`` batch files of
every task are numbered as ``maps-<network>-<index>.npz``, and the CSV/Parquet columns are the
classification's (a task's extra row fields stay in ``results.jsonl``).
"""

"""The run loop: :func:`run` streams files through an engine and writes what comes back (pictures or maps
files, then the table's rows), resuming where an earlier run stopped; the progress line."""

from __future__ import annotations

import functools
import itertools
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from camlens.errors import UsageError
from camlens.pipeline.engines import ENGINES, explained_batches, explained_local, model_fills_the_cpus
from camlens.pipeline.files import (
    check_output_dir,
    fit_stem,
    lock_output_dir,
    make_dir,
    next_map_index,
    write_bytes,
    write_image_files,
)
from camlens.pipeline.items import ImageResult, NetworkSpec, RunOptions
from camlens.pipeline.maps import PhotoMaps
from camlens.pipeline.sources import collect_sources, source_key, unique_stems
from camlens.pipeline.table import JOURNAL, TABLE, TableState, export_table, export_targets, iter_table, repair
from camlens.pipeline.task import CLASSIFICATION, Task
from camlens.pipeline.worker import resolve_device

if TYPE_CHECKING:
    from camlens.zoo import Network


ENCODERS = min(4, os.cpu_count() or 1)  # threads that encode one batch's pictures (the last batch's are the wait)


@dataclass
class RunSummary:
    """What a :func:`run` did. ``results`` are slim (no pixels or maps: :func:`run`'s ``on_result`` sees those)."""

    results: list[ImageResult]
    skipped: int  # done in an earlier run (resumed)
    seconds: float
    output_dir: Path
    table: Path | None
    timings: dict[str, float] = field(default_factory=dict)
    engine: str = "local"
    tables: list[Path] = field(default_factory=list)  # every table written: results.jsonl, .csv, .parquet

    @property
    def failures(self) -> list[ImageResult]:
        return [r for r in self.results if not r.ok]

    @property
    def written(self) -> int:
        return sum(len(r.files) for r in self.results)


def done_count(
    network: str,
    sources: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    options: RunOptions = RunOptions(),
    recursive: bool = False,
    task: Task = CLASSIFICATION,
) -> tuple[int, int]:
    """``(done, total)``: how many images of ``sources`` ``output_dir``'s table holds as done (what a resumed
    run skips), and how many there are."""
    paths = (getattr(task, "collect", None) or collect_sources)(sources, recursive)
    key = run_key(network, options, task)
    done = {
        str(row.get("source"))
        for row in iter_table(Path(output_dir))
        if row.get("key") == key and row.get("network") == network and row.get("status") == "ok"
    }
    return sum(source_key(str(p)) in done for p in paths), len(paths)


def run_key(network: str, options: RunOptions, task: Task = CLASSIFICATION) -> str:
    """The key a table's rows of this network, options and task carry (what a resumed run looks for)."""
    return options.key(network if task.name == CLASSIFICATION.name else f"{network}:{task.name}")


def _holding_the_output_lock(func: Callable[..., RunSummary]) -> Callable[..., RunSummary]:
    """Call ``func(network, sources, output_dir, ...)`` holding the run lock of ``output_dir``."""

    @functools.wraps(func)
    def locked(network: Any, sources: Any, output_dir: str | os.PathLike, *args: Any, **kwargs: Any) -> RunSummary:
        release = lock_output_dir(check_output_dir(output_dir))
        try:
            return func(network, sources, output_dir, *args, **kwargs)
        finally:
            release()

    return locked


@_holding_the_output_lock
def run(
    network: Network | NetworkSpec,
    sources: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    options: RunOptions = RunOptions(),
    *,
    on_result: Callable[[ImageResult], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    metrics: Callable[[ImageResult], dict[str, float]] | None = None,
    engine: str = "local",
    workers: int | None = None,
    recursive: bool = False,
    on_note: Callable[[str], None] | None = None,
    task: Task = CLASSIFICATION,
) -> RunSummary:
    """Explain every image of ``sources`` (files or folders) and write pictures and the results table.

    Memory is bounded by the batch size and the queues (two batches decoded ahead, three being written),
    whatever the number of images. A killed run leaves complete files only (``.part`` temporaries are
    cleaned by the next run) and a table whose every ``ok`` row has its files; the same call again does
    only the images that have no ``ok`` row for the same file (path, size, mtime) and options.

    Args:
        network: from :func:`camlens.load_network`, or a :class:`NetworkSpec` (built here; the Ray engine
            needs a spec, or a network built by :meth:`NetworkSpec.build`).
        sources: image files and folders.
        output_dir: created if needed.
        options: see :class:`RunOptions`.
        on_result: called with each image's result (maps included with the local engine) as soon as its
            files are written (in input order).
        progress: called with ``(done, total)`` at the start and after each batch (``done`` counts images,
            those done by an earlier run included).
        metrics: called with each explained image's result (maps, pixels and the network at hand) before it
            is written; its ``{name: value}`` become the ``metrics`` of the row (``metric_<name>`` columns).
        engine: ``"local"`` (threads in this process) or ``"ray"`` (Ray Data actors: see
            :mod:`camlens.pipeline.engines`; ``pip install camlens[ray]``).
        workers: with ``engine="ray"``, how many actors (default: one per GPU, else half the CPUs).
        recursive: search the folders' sub-folders too (without it, ``on_note`` hears how many were not).
        on_note: called with a line for the user (e.g. sub-folders not searched) before any image is done.
        task: what each item is explained for, and its files and row (:mod:`camlens.pipeline.task`; default:
            image classification). The task's name is part of the key a resumed run checks.

    Raises:
        UsageError: bad options, files that exist already (without ``overwrite``), another run writing
            into ``output_dir`` at the moment (see :func:`lock_output_dir`), or the first bad image with
            ``fail_fast``.
    """
    start = time.perf_counter()
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    out = check_output_dir(output_dir)
    spec = network if isinstance(network, NetworkSpec) else getattr(network, "spec", None)
    if engine == "ray" and spec is None:
        raise UsageError(
            "engine='ray' builds the network in each worker: pass camlens.run.NetworkSpec(name, weight_path) "
            "(or a network from NetworkSpec.build()) instead of a loaded model"
        )
    net = network.build() if isinstance(network, NetworkSpec) else network
    device = resolve_device(options.device) if engine == "local" else None
    paths = (getattr(task, "collect", None) or collect_sources)(sources, recursive, on_note)
    stems = [fit_stem(stem, net.name, options, task.planned_files) for stem in unique_stems(paths)]
    key = run_key(net.name, options, task)
    repair(out)
    done: set[str] = set()
    ours: set[str] = set()  # absolute paths this folder's table holds with the same options
    for row in itertools.chain(iter_table(out), iter_table(out, JOURNAL)):
        if row.get("key") != key or row.get("network") != net.name:
            continue
        source = str(row.get("source", ""))
        ours.add(source.rsplit(":", 2)[0] if source.count(":") >= 2 else source)
        if options.resume and row.get("status") == "ok":
            done.add(source)
    todo = [(p, s) for p, s in zip(paths, stems, strict=True) if source_key(str(p)) not in done]
    skipped = len(paths) - len(todo)
    if not options.overwrite:
        clash = [
            name
            for path, stem in todo
            if os.path.abspath(path) not in ours  # files of an interrupted run with these options are ours
            for name in task.planned_files(stem, net.name, options)
            if (out / name).exists()
        ]
        if clash:
            raise UsageError(
                f"{out / clash[0]} exists already ({len(clash)} files would be replaced): "
                "pass --overwrite, or choose another --output-dir"
            )
    timings = {"decode": 0.0, "model": 0.0, "write": 0.0}
    results: list[ImageResult] = []
    created = make_dir(out)
    table_state = TableState(out, net.name, key, task.row)
    phased = False
    if engine == "ray":
        assert spec is not None
        batches: Iterator[list[ImageResult]] = explained_batches(spec, net.name, todo, options, workers, timings, task)
    else:
        assert device is not None
        net.model.to(device)
        phased = model_fills_the_cpus(device)  # see camlens.pipeline.engines: no work beside the model then
        batches = explained_local(net, todo, options, device, timings, task, overlap=not phased)
    first_index = next_map_index(out, net.name)
    writer = ThreadPoolExecutor(1, thread_name_prefix="camlens-write")  # batches in order: the table's rows too
    encoders = ThreadPoolExecutor(ENCODERS, thread_name_prefix="camlens-encode")  # a batch's pictures at once
    writing: deque[Future[list[ImageResult]]] = deque()
    try:
        if progress is not None:
            progress(skipped, len(paths))
        for index, merged in enumerate(batches, first_index):
            bad = [r for r in merged if not r.ok]
            if bad and options.fail_fast:
                raise UsageError(bad[0].error or "bad image")
            if metrics is not None:
                for r in merged:
                    if r.ok:
                        r.metrics.update(metrics(r))
            if options.pictures:  # the torch part of the pictures here, not in the encoder threads
                for r in merged:
                    if r.ok and isinstance(r.maps, PhotoMaps):
                        r.maps.make_all()
            writing.append(writer.submit(write_batch, merged, options, index, table_state, timings, encoders, task))
            while len(writing) > (0 if phased else 2) or (writing and writing[0].done()):
                results.extend(finish(writing.popleft(), on_result))
                if progress is not None:
                    progress(skipped + len(results), len(paths))
        while writing:
            results.extend(finish(writing.popleft(), on_result))
            if progress is not None:
                progress(skipped + len(results), len(paths))
        (out / JOURNAL).unlink(missing_ok=True)  # every started image has its final row
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # stops the readers (or the Ray dataset)
        writer.shutdown(wait=True)  # batches already explained are written, and their rows recorded
        encoders.shutdown(wait=True)
        table, tables = None, []
        if table_state.started or skipped:
            exported = export_table(out)
            table = exported[-1] if exported else out / TABLE
            tables = [out / TABLE, *exported]
            targets = getattr(task, "targets", None)  # a task with several targets per item: one row per target
            listed = export_targets(out, targets) if targets else None
            tables += [listed] if listed is not None else []
        if created and not any(out.iterdir()):
            out.rmdir()
    return RunSummary(results, skipped, time.perf_counter() - start, out, table, timings, engine, tables)


def write_batch(
    results: list[ImageResult],
    options: RunOptions,
    index: int,
    table: TableState,
    timings: dict[str, float],
    encoders: ThreadPoolExecutor | None = None,
    task: Task = CLASSIFICATION,
) -> list[ImageResult]:
    """Write one explained batch: its started rows (journal), its files (``task.files`` of each record, made
    by ``encoders``; without pictures ``task.batch_files``), then its final rows (``task.row``)."""
    t = time.perf_counter()
    ok = [r for r in results if r.ok]
    table.begin(results)
    if options.pictures:
        unencoded = [r for r in ok if not r.blobs]  # (the Ray engine's workers encode their own)
        if encoders is not None and len(unencoded) > 1:
            encoded: Iterable[dict[str, bytes]] = encoders.map(
                lambda r: task.files(r, table.network, options), unencoded
            )
        else:
            encoded = (task.files(r, table.network, options) for r in unencoded)
        for r, blobs in zip(unencoded, encoded, strict=True):
            r.blobs = blobs
        for r in ok:
            r.files = write_image_files(r, table.out, table.network, options)
            r.blobs = {}
    elif ok:
        shared = task.batch_files(ok, table.network, index)
        for name, data in shared.items():
            write_bytes(table.out / name, data)
        for r in ok:
            r.files = list(shared)
    table.add(results)
    timings["write"] += time.perf_counter() - t
    return results


def finish(future: Future[list[ImageResult]], on_result: Callable[[ImageResult], None] | None) -> list[ImageResult]:
    results = future.result()
    for r in results:
        if on_result is not None:
            on_result(r)
        r.slim()  # keep memory bounded: the summary holds rows, not pixels
    return results


def progress_printer(stream: Any = None, every: float = 10.0) -> Callable[[int, int], None]:
    """A ``progress`` callback: a tqdm bar (images/s, ETA) on a terminal, else a plain line every ``every`` s.

    The first call's ``done`` (images done by an earlier run) is the baseline: rates and ETAs count only
    this run's images. The plain line goes out at most every ``every`` seconds, and at the end.

    Example:
        >>> import io
        >>> stream = io.StringIO()
        >>> show = progress_printer(stream, every=0)
        >>> show(0, 4); show(2, 4); show(4, 4)
        >>> stream.getvalue().splitlines()[-1].startswith("camlens: 4/4 images")
        True
    """
    stream = stream or sys.stderr
    state: dict[str, Any] = {}
    if getattr(stream, "isatty", lambda: False)():
        from tqdm import tqdm

        def update_bar(done: int, total: int) -> None:
            if total <= 1:
                return
            bar = state.get("bar")
            if bar is None:
                bar = state["bar"] = tqdm(
                    total=total, initial=done, unit="img", desc="explaining", file=stream, leave=False, smoothing=0.1
                )
            bar.update(done - bar.n)
            bar.refresh()  # once a batch: every batch shows (tqdm would skip updates closer than 0.1 s)
            if done >= total:
                bar.close()

        return update_bar

    def update_line(done: int, total: int) -> None:
        now = time.perf_counter()
        if "start" not in state:
            state.update(start=now, base=done, last=now)
            return
        if total <= 1 or (now - state["last"] < every and done < total):
            return
        state["last"] = now
        rate = (done - state["base"]) / max(now - state["start"], 1e-9)
        eta = f"ETA {(total - done) / rate:.0f} s" if rate > 0 else "ETA unknown"
        print(f"camlens: {done}/{total} images, {rate:.1f} img/s, {eta}", file=stream, flush=True)

    return update_line

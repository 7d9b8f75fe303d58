"""Images in, results out: the orchestration that the CLI commands, the viewer and the Ray engine call.

:func:`explain_images` explains decoded images with one network (in memory, nothing written).
:func:`run` streams files through it: decoding runs ahead of the model and encoding behind it in worker
threads, memory stays bounded by the batch and queue sizes whatever the number of files, every picture is
written atomically, one row per image goes to a results table (``results.jsonl``, then ``results.csv``
and, with pyarrow, ``results.parquet``), a bad image is a row with its error (the run goes on), and the
same command run again does only the images the table does not hold yet.

Example:
    >>> import camlens.run as run                                           # doctest: +SKIP
    >>> net = camlens.load_network()                                        # doctest: +SKIP
    >>> summary = run.run(net, ["examples/"], "results", run.RunOptions())  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from camlens.errors import UsageError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from camlens.zoo import Network

SEED_METHODS = ("gradcam", "gradcam++", "guided_backprop", "guided_gradcam")
TABLE = "results.jsonl"
_GRADIENT_METHODS = ("guided_backprop", "guided_gradcam")  # image-shaped (C, H, W) maps


@dataclass(frozen=True)
class RunOptions:
    """What to compute and what to write (everything that changes an image's outputs is in :meth:`key`)."""

    methods: tuple[str, ...] = SEED_METHODS
    target_layer: str | None = None
    class_id: int | None = None
    topk: int = 5
    batch_size: int = 8
    device: str = "cpu"
    pictures: bool = True  # False: maps (float16, one npz per batch) and the table only
    save_maps: bool = False  # with pictures: also <stem>-<network>-maps.npz (float32)
    image_format: str = "jpg"
    annotate: bool = False
    colormap: str = "jet"
    overwrite: bool = False
    fail_fast: bool = False
    resume: bool = True

    def key(self, network: str) -> str:
        """A short hash of everything that changes the outputs (not overwrite/resume/fail_fast/batch size)."""
        fields = asdict(self)
        for name in ("overwrite", "fail_fast", "resume", "batch_size", "topk", "device"):
            fields.pop(name)
        fields["network"] = network
        return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class ImageResult:
    """One image's explanation: predictions, explained class, maps at the image's size, files written."""

    path: str
    stem: str
    rgb: np.ndarray | None = None
    maps: dict[str, torch.Tensor] = field(default_factory=dict)
    probabilities: torch.Tensor | None = None
    class_id: int | None = None
    score: float = float("nan")
    layer: str | None = None
    error: str | None = None
    files: list[str] = field(default_factory=list)
    top: list[tuple[int, str, float]] = field(default_factory=list)  # (class, label, probability)
    class_name: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    def record(self, network: str, key: str = "") -> dict[str, Any]:
        """The image's row of the results table (JSON-serialisable)."""
        return {
            "path": self.path,
            "stem": self.stem,
            "network": network,
            "status": "ok" if self.ok else "error",
            "error": self.error,
            "class_id": self.class_id,
            "class_name": self.class_name,
            "score": None if self.score != self.score else round(self.score, 6),
            "probability": None
            if self.probabilities is None or self.class_id is None
            else round(float(self.probabilities[self.class_id]), 6),
            "layer": self.layer,
            "topk": [{"class_id": c, "label": label, "probability": round(p, 6)} for c, label, p in self.top],
            "files": self.files,
            "notes": self.notes,
            "key": key,
            "source": _source_key(self.path),
        }


@dataclass
class RunSummary:
    """What a :func:`run` did."""

    results: list[ImageResult]
    skipped: int  # done in an earlier run (resumed)
    seconds: float
    output_dir: Path
    table: Path | None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def failures(self) -> list[ImageResult]:
        return [r for r in self.results if not r.ok]

    @property
    def written(self) -> int:
        return sum(len(r.files) for r in self.results)


# ------------------------------------------------------------------------------------------ inputs
def collect_sources(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, folders expanded to their image files (sorted by name); a folder with none is an error."""
    from camlens.images import IMAGE_SUFFIXES

    found: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            with os.scandir(path) as entries:
                inside = sorted(
                    Path(e.path) for e in entries if e.is_file() and Path(e.name).suffix.lower() in IMAGE_SUFFIXES
                )
            if not inside:
                raise UsageError(f"folder {path} holds no images")
            found.extend(inside)
        else:
            found.append(path)
    return found


def unique_stems(paths: Sequence[Path]) -> list[str]:
    """An output stem per path: the file's stem, or ``<folder>_<stem>`` (then ``-2``, ``-3``) where stems collide.

    Example:
        >>> unique_stems([Path("a/cat.jpg"), Path("b/cat.png"), Path("dog.jpg")])
        ['a_cat', 'b_cat', 'dog']
    """
    counts = Counter(p.stem for p in paths)
    stems = [f"{p.parent.name}_{p.stem}" if counts[p.stem] > 1 and p.parent.name else p.stem for p in paths]
    seen: Counter[str] = Counter()
    unique = []
    for stem in stems:
        seen[stem] += 1
        unique.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return unique


def _source_key(path: str) -> str:
    try:
        stat = os.stat(path)
    except OSError:
        return path
    return f"{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}"


# ------------------------------------------------------------------------------------------ explaining
def explain_images(
    network: Network,
    rgbs: Sequence[np.ndarray],
    options: RunOptions = RunOptions(),
    *,
    paths: Sequence[str] | None = None,
    stems: Sequence[str] | None = None,
    device: torch.device | None = None,
) -> list[ImageResult]:
    """Explain decoded RGB images (H x W x 3 uint8) with ``network`` in one batch; nothing is written.

    The maps come back at each image's own size (CAMs upsampled once from the layer map).
    Raises :class:`~camlens.errors.UsageError` for a bad layer, class or method.
    """
    import camlens
    from camlens.images import to_batch
    from camlens.render import maps_at_size

    if not rgbs:
        return []
    device = device or resolve_device(options.device)
    model = network.model
    x = to_batch(list(rgbs), network.input_size, network.mean, network.std).to(device)
    try:
        result = camlens.explain(
            model, x, list(options.methods), target_layer=options.target_layer, targets=options.class_id
        )
    except (ValueError, TypeError) as error:
        raise UsageError(str(error)) from None
    probabilities = None if result.logits is None else result.logits.float().softmax(dim=1).cpu()
    notes = list(getattr(result, "warnings", []) or [])
    out = []
    for i, rgb in enumerate(rgbs):
        p = None if probabilities is None else probabilities[i]
        class_id = None if result.classes is None else int(result.classes[i])
        top: list[tuple[int, str, float]] = []
        if p is not None:
            values, indices = p.topk(min(options.topk, p.numel()))
            top = [(int(c), network.label(int(c)), float(v)) for v, c in zip(values, indices, strict=True)]
        out.append(
            ImageResult(
                path="" if paths is None else str(paths[i]),
                stem=f"image{i}" if stems is None else stems[i],
                rgb=rgb,
                maps=maps_at_size(result, i, list(options.methods), rgb.shape[:2]),
                probabilities=p,
                class_id=class_id,
                score=float(result.scores[i]),
                layer=result.target_layer,
                top=top,
                class_name="" if class_id is None else network.label(class_id),
                notes=list(notes),
            )
        )
    return out


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:1``, ``mps`` or ``auto`` (CUDA, then MPS, then CPU), checked to exist here."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r} (try cpu, cuda or auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name} is not available here (no CUDA); use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"device {name} does not exist ({torch.cuda.device_count()} CUDA devices)")
    return device


def caption(result: ImageResult) -> str:
    """The label an annotated picture carries: class name and probability (or the class number)."""
    if result.class_id is None:
        return "custom target"
    name = result.class_name or f"class {result.class_id}"
    if result.probabilities is not None:
        return f"{name} {float(result.probabilities[result.class_id]):.2f}"
    return name


# ------------------------------------------------------------------------------------------ writing
def planned_files(stem: str, network: str, options: RunOptions) -> list[str]:
    """The picture (and map) file names one image will get."""
    from camlens.render import picture_kinds

    if not options.pictures:
        return []
    names = [
        f"{stem}-{network}-{suffix}.{options.image_format}"
        for m in options.methods
        for suffix, _ in picture_kinds(m, m not in _GRADIENT_METHODS)
    ]
    if options.save_maps:
        names.append(f"{stem}-{network}-maps.npz")
    return names


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary name in the same folder and rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_image_files(result: ImageResult, folder: Path, network: str, options: RunOptions) -> list[str]:
    """Write one image's pictures (and maps) atomically; returns the file names."""
    import numpy as np

    from camlens.render import pictures

    assert result.rgb is not None
    names = []
    cap = caption(result) if options.annotate else None
    fmt = "PNG" if options.image_format == "png" else "JPEG"
    for suffix, picture in pictures(result.rgb, result.maps, cap, options.colormap).items():
        name = f"{result.stem}-{network}-{suffix}.{options.image_format}"
        _atomic(folder / name, lambda tmp, pic=picture: _save_as(pic, tmp, fmt))
        names.append(name)
    if options.save_maps:
        arrays: dict[str, Any] = {
            m: (v.numpy() if v.dim() == 2 else np.transpose(v.numpy(), (1, 2, 0))).astype(np.float32)
            for m, v in result.maps.items()
        }
        arrays["class_id"] = np.int64(-1 if result.class_id is None else result.class_id)
        arrays["score"] = np.float32(result.score)
        name = f"{result.stem}-{network}-maps.npz"
        _atomic(folder / name, lambda tmp: _savez(tmp, arrays))
        names.append(name)
    return names


def _save_as(picture: np.ndarray, tmp: Path, fmt: str) -> None:
    from PIL import Image

    image = Image.fromarray(picture)
    if fmt == "JPEG":
        image.save(tmp, format="JPEG", quality=92)
    else:
        image.save(tmp, format="PNG")


def _savez(tmp: Path, arrays: dict[str, Any]) -> None:
    import numpy as np

    with open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)


def write_batch_maps(results: list[ImageResult], folder: Path, network: str, index: int) -> str:
    """``--no-pictures``: the batch's maps, float16, in one ``maps-<network>-<index>.npz`` (keys ``stem/method``)."""
    import numpy as np

    arrays: dict[str, Any] = {}
    for r in results:
        for m, v in r.maps.items():
            arrays[f"{r.stem}/{m}"] = v.numpy().astype(np.float16)
    name = f"maps-{network}-{index:06d}.npz"
    _atomic(folder / name, lambda tmp: _savez(tmp, arrays))
    return name


# ------------------------------------------------------------------------------------------ the table
def read_table(folder: Path) -> list[dict[str, Any]]:
    """The rows of ``results.jsonl`` (a last line cut off by a kill is ignored)."""
    path = folder / TABLE
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _append_rows(folder: Path, rows: list[dict[str, Any]]) -> None:
    with open(folder / TABLE, "a", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _latest_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        latest[(row.get("path", ""), row.get("network", ""))] = row
    return list(latest.values())


def export_table(folder: Path) -> list[Path]:
    """Rewrite ``results.csv`` (and ``results.parquet`` when pyarrow is installed) from ``results.jsonl``."""
    import csv

    rows = _latest_rows(read_table(folder))
    if not rows:
        return []
    flat = []
    for row in rows:
        item = {k: v for k, v in row.items() if k not in ("topk", "files", "notes")}
        item["topk"] = ";".join(f"{t['class_id']}:{t['probability']}" for t in row.get("topk", []))
        item["files"] = ";".join(row.get("files", []))
        item["notes"] = ";".join(row.get("notes", []))
        flat.append(item)
    columns = list(flat[0])
    written = []

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            writer.writerows(flat)

    _atomic(folder / "results.csv", write_csv)
    written.append(folder / "results.csv")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return written
    table = pa.Table.from_pylist(rows)
    _atomic(folder / "results.parquet", lambda tmp: pq.write_table(table, tmp))
    written.append(folder / "results.parquet")
    return written


# ------------------------------------------------------------------------------------------ the run
def check_output_dir(path: str | os.PathLike) -> Path:
    """The output folder, checked writable (it may not exist yet), or a :class:`UsageError`."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"output dir {out} is a file")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"output dir {out} cannot be written ({existing} is not a writable folder)")
    return out


def run(
    network: Network,
    sources: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    options: RunOptions = RunOptions(),
    *,
    on_result: Callable[[ImageResult], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RunSummary:
    """Explain every image of ``sources`` (files or folders) and write pictures and the results table.

    Args:
        network: from :func:`camlens.load_network`.
        sources: image files and folders.
        output_dir: created if needed.
        options: see :class:`RunOptions`.
        on_result: called with each image's result as soon as its files are written (in input order).
        progress: called with ``(done, total)`` after each batch.

    Raises:
        UsageError: bad options, files that exist already (without ``overwrite``), or the first bad
            image with ``fail_fast``.
    """
    start = time.perf_counter()
    out = check_output_dir(output_dir)
    device = resolve_device(options.device)
    paths = collect_sources(sources)
    stems = unique_stems(paths)
    key = options.key(network.name)
    done = {
        row["source"]
        for row in read_table(out)
        if options.resume and row.get("status") == "ok" and row.get("key") == key
    }
    todo = [(p, s) for p, s in zip(paths, stems, strict=True) if _source_key(str(p)) not in done]
    skipped = len(paths) - len(todo)
    if not options.overwrite:
        clash = [
            name for _, stem in todo for name in planned_files(stem, network.name, options) if (out / name).exists()
        ]
        if clash:
            raise UsageError(
                f"{out / clash[0]} exists already ({len(clash)} files would be replaced): "
                "pass --overwrite, or choose another --output-dir"
            )
    network.model.to(device)
    timings = {"decode": 0.0, "model": 0.0, "write": 0.0}
    results: list[ImageResult] = []
    created = _make_dir(out)
    batches = [todo[i : i + options.batch_size] for i in range(0, len(todo), options.batch_size)]
    max_side = None if options.pictures else max(network.input_size) * 2
    table_state = _TableState(out, network.name, key)
    try:
        with (
            ThreadPoolExecutor(2, thread_name_prefix="camlens-read") as readers,
            ThreadPoolExecutor(1, thread_name_prefix="camlens-write") as writer,
        ):
            decoded: deque[Future[list[tuple[Path, str, Any]]]] = deque()
            writing: deque[Future[list[ImageResult]]] = deque()
            upcoming = iter(batches)

            def read_next() -> None:
                batch = next(upcoming, None)
                if batch is not None:
                    decoded.append(readers.submit(_decode, batch, max_side, timings))

            read_next()
            read_next()
            for index in range(len(batches)):
                items = decoded.popleft().result()
                read_next()
                good = [(p, s, rgb) for p, s, rgb in items if not isinstance(rgb, str)]
                bad = [ImageResult(str(p), s, error=rgb) for p, s, rgb in items if isinstance(rgb, str)]
                if bad and options.fail_fast:
                    raise UsageError(bad[0].error or "bad image")
                t = time.perf_counter()
                explained = explain_images(
                    network,
                    [rgb for _, _, rgb in good],
                    options,
                    paths=[str(p) for p, _, _ in good],
                    stems=[s for _, s, _ in good],
                    device=device,
                )
                timings["model"] += time.perf_counter() - t
                merged = _in_order(items, explained, bad)
                for r in merged:
                    if r.stem != Path(r.path).stem:
                        r.notes.append(f"written as {r.stem} (another input has the same file name)")
                writing.append(writer.submit(_write, merged, options, index, table_state, timings))
                while len(writing) > 2 or (writing and writing[0].done()):
                    results.extend(_finish(writing.popleft(), on_result))
                if progress is not None:
                    progress(skipped + len(results), len(paths))
            while writing:
                results.extend(_finish(writing.popleft(), on_result))
                if progress is not None:
                    progress(skipped + len(results), len(paths))
    finally:
        if created and not any(out.iterdir()):
            out.rmdir()
    table = None
    if table_state.started or skipped:
        exported = export_table(out)
        table = exported[-1] if exported else out / TABLE
    return RunSummary(results, skipped, time.perf_counter() - start, out, table, timings)


def _decode(
    batch: list[tuple[Path, str]], max_side: int | None, timings: dict[str, float]
) -> list[tuple[Path, str, Any]]:
    from camlens.images import read_image

    t = time.perf_counter()
    items: list[tuple[Path, str, Any]] = []
    for path, stem in batch:
        try:
            rgb: Any = read_image(path) if max_side is None else read_image(path, max_side=max_side)
        except UsageError as error:
            rgb = str(error)
        items.append((path, stem, rgb))
    timings["decode"] += time.perf_counter() - t
    return items


def _in_order(
    items: list[tuple[Path, str, Any]], explained: list[ImageResult], bad: list[ImageResult]
) -> list[ImageResult]:
    good = iter(explained)
    failed = iter(bad)
    return [next(failed) if isinstance(rgb, str) else next(good) for _, _, rgb in items]


class _TableState:
    """The results table of one run: rows of bad images wait until a first image succeeds, so that a run
    in which nothing could be explained leaves nothing behind."""

    def __init__(self, out: Path, network: str, key: str) -> None:
        self.out, self.network, self.key = out, network, key
        self.pending: list[dict[str, Any]] = []
        self.started = False

    def add(self, results: list[ImageResult]) -> None:
        rows = self.pending + [r.record(self.network, self.key) for r in results]
        if not self.started and not any(r.ok for r in results):
            self.pending = rows
            return
        self.pending = []
        self.started = True
        _append_rows(self.out, rows)


def _make_dir(out: Path) -> bool:
    """Create the output folder (and say so); a folder that cannot be made is the user's input error."""
    if out.is_dir():
        return False
    try:
        out.mkdir(parents=True)
    except OSError as error:
        raise UsageError(f"output dir {out} cannot be written ({error.strerror or error})") from None
    return True


def _write(
    results: list[ImageResult], options: RunOptions, index: int, table: _TableState, timings: dict[str, float]
) -> list[ImageResult]:
    t = time.perf_counter()
    ok = [r for r in results if r.ok]
    if options.pictures:
        for r in ok:
            r.files = write_image_files(r, table.out, table.network, options)
    elif ok:
        name = write_batch_maps(ok, table.out, table.network, index)
        for r in ok:
            r.files = [name]
    table.add(results)
    for r in results:
        r.rgb = None  # pictures are written: keep memory bounded
        if not options.pictures:
            r.maps = {}
    timings["write"] += time.perf_counter() - t
    return results


def _finish(future: Future[list[ImageResult]], on_result: Callable[[ImageResult], None] | None) -> list[ImageResult]:
    results = future.result()
    if on_result is not None:
        for r in results:
            on_result(r)
    return results


def progress_printer(stream: Any = None, every: float = 10.0) -> Callable[[int, int], None]:
    """A ``progress`` callback: a tqdm bar (images/s, ETA) on a terminal, else a plain line every ``every`` s."""
    stream = stream or sys.stderr
    start = time.perf_counter()
    if getattr(stream, "isatty", lambda: False)():
        from tqdm import tqdm

        bar = tqdm(total=0, unit="img", desc="explaining", file=stream, leave=False)

        def update_bar(done: int, total: int) -> None:
            if total <= 1:
                return
            bar.total = total
            bar.n = done
            bar.refresh()
            if done >= total:
                bar.close()

        return update_bar
    last = [start]

    def update_line(done: int, total: int) -> None:
        now = time.perf_counter()
        if total <= 1 or now - last[0] < every:
            return
        last[0] = now
        rate = done / max(now - start, 1e-9)
        eta = (total - done) / rate if rate > 0 else float("inf")
        print(f"camlens: {done}/{total} images, {rate:.1f} img/s, ETA {eta:.0f} s", file=stream, flush=True)

    return update_line


# ------------------------------------------------------------------------------------------ compare
@dataclass
class CompareSummary:
    """What :func:`compare` did: one table per image, the files written, and why networks were unavailable."""

    tables: list[Any]  # camlens.report.CompareTable
    files: list[str]
    unavailable: dict[str, str]
    output_dir: Path
    timings: dict[str, float] = field(default_factory=dict)


def compare(
    names: Sequence[str],
    sources: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    load: Callable[[str], Network],
    options: RunOptions = RunOptions(),
    *,
    layers: dict[str, str] | None = None,
) -> CompareSummary:
    """Explain every image with every network; write one comparison table per image (and an index).

    ``load(name)`` builds a network or raises :class:`~camlens.errors.UsageError` (the network becomes an
    "unavailable" row with that reason) or :class:`~camlens.errors.UnknownName` (fatal). ``layers`` maps
    network names to target layers (key ``""``: every network).
    """
    from camlens.errors import UnknownName
    from camlens.images import read_image
    from camlens.render import picture_kinds, pictures, title
    from camlens.report import CompareRow, CompareTable

    out = check_output_dir(output_dir)
    device = resolve_device(options.device)
    paths = collect_sources(sources)
    stems = unique_stems(paths)
    if not options.overwrite:
        clash = [
            f"{s}-compare.{ext}"
            for s in stems
            for ext in ("png", "html", "md")
            if (out / f"{s}-compare.{ext}").exists()
        ]
        if clash:
            raise UsageError(f"{out / clash[0]} exists already: pass --overwrite, or choose another --output-dir")
    timings = {"load": 0.0, "model": 0.0, "io": 0.0}
    t = time.perf_counter()
    rgbs = [read_image(p) for p in paths]
    columns = [
        (suffix, title(m) + (" heatmap" if kind == "heat" else ""))
        for m in options.methods
        for suffix, kind in picture_kinds(m, m not in _GRADIENT_METHODS)
    ]
    tables = [CompareTable(stem, rgb, columns) for stem, rgb in zip(stems, rgbs, strict=True)]
    layers = layers or {}
    unavailable: dict[str, str] = {}
    timings["io"] += time.perf_counter() - t
    for name in names:
        t = time.perf_counter()
        try:
            network = load(name)
        except UnknownName:
            raise
        except UsageError as error:
            unavailable[name] = str(error)
            for table in tables:
                table.rows.append(CompareRow(name, f"unavailable: {error}"))
            timings["load"] += time.perf_counter() - t
            continue
        timings["load"] += time.perf_counter() - t
        layer = layers.get(name, layers.get(network.name, layers.get("")))
        if layer is not None:
            from camlens.layers import resolve_layer

            try:
                resolve_layer(network.model, layer)
            except ValueError as error:
                raise UsageError(f"{network.name}: {error}") from None
        network.model.to(device)
        net_options = RunOptions(**{**asdict(options), "target_layer": layer})
        for start in range(0, len(rgbs), options.batch_size):
            t = time.perf_counter()
            chunk = rgbs[start : start + options.batch_size]
            results = explain_images(network, chunk, net_options, device=device)
            timings["model"] += time.perf_counter() - t
            t = time.perf_counter()
            for table, result in zip(tables[start : start + len(chunk)], results, strict=True):
                prediction = ""
                if result.top:
                    _, label, p = result.top[0]
                    prediction = f"{label} ({p:.2f})"
                explained = "" if result.class_id is None else f"class {result.class_id} ({result.class_name})"
                cap = caption(result) if options.annotate else None
                table.rows.append(
                    CompareRow(
                        network.name,
                        prediction,
                        pictures(result.rgb, result.maps, cap, options.colormap),  # type: ignore[arg-type]
                        result.layer or "",
                        explained,
                    )
                )
            timings["io"] += time.perf_counter() - t
        network.model.cpu()
        del network
    t = time.perf_counter()
    files = write_staged(out, lambda folder: _write_tables(folder, tables, options.image_format))
    timings["io"] += time.perf_counter() - t
    return CompareSummary(tables, files, unavailable, out, timings)


def write_staged(out: Path, write: Callable[[Path], list[str]]) -> list[str]:
    """Run ``write(folder)`` into a staging folder beside ``out`` and move the files it names into ``out``
    only when it succeeded; the staging folder is removed whatever happens (no partial output).

    Returns what ``write`` returned (its file names, and anything else it puts first)."""
    import shutil

    parent = out
    while not parent.exists():
        parent = parent.parent
    staging = Path(tempfile.mkdtemp(prefix=".camlens-", dir=parent))
    try:
        returned = write(staging)
        out.mkdir(parents=True, exist_ok=True)
        for name in returned:
            if (staging / name).is_file():
                os.replace(staging / name, out / name)
        return returned
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_tables(folder: Path, tables: list[Any], image_format: str) -> list[str]:
    from camlens.report import write_compare, write_index

    files: list[str] = []
    for table in tables:
        files += write_compare(folder, table, image_format)
    if len(tables) > 1:
        files.append(write_index(folder, tables))
    return files

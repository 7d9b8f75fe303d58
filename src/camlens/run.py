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

import functools
import hashlib
import itertools
import json
import math
import os
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from camlens.errors import UsageError
from camlens.names import GUIDED_METHODS, SEED_METHODS
from camlens.pipeline.maps import load_maps as load_maps

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from camlens.pipeline.maps import CompactMaps
    from camlens.zoo import Network

TABLE = "results.jsonl"
JOURNAL = ".camlens-started.jsonl"  # images whose files are being written (kept only by an interrupted run)
_GRADIENT_METHODS = GUIDED_METHODS  # image-shaped (C, H, W) maps
ENGINES = ("local", "ray")
ENCODERS = min(4, os.cpu_count() or 1)  # threads that encode one batch's pictures (the last batch's are the wait)


@dataclass(frozen=True)
class RunOptions:
    """What to compute and what to write (everything that changes an image's outputs is in :meth:`key`)."""

    methods: tuple[str, ...] = SEED_METHODS
    target_layer: str | None = None
    class_id: int | None = None
    topk: int = 5
    batch_size: int = 8
    device: str = "cpu"
    pictures: bool = True  # False: maps (compact, one npz per batch: camlens.pipeline.maps) and the table only
    save_maps: bool = False  # with pictures: also <stem>-<network>-maps.npz (compact, float32)
    image_format: str = "jpg"
    annotate: bool = False
    colormap: str = "jet"
    overwrite: bool = False
    fail_fast: bool = False
    resume: bool = True
    metrics: tuple[str, ...] = ()  # per image and method, on the maps at the model's input size
    metric_steps: int = 50  # deletion / insertion steps
    layout: str | None = None  # the target layer's layout: None (automatic), "nchw", "nhwc" or "tokens"

    def key(self, network: str) -> str:
        """A short hash of everything that changes the outputs (not overwrite/resume/fail_fast/batch size)."""
        fields = asdict(self)
        for name in ("overwrite", "fail_fast", "resume", "batch_size", "topk", "device"):
            fields.pop(name)
        if fields["layout"] is None:  # keys of runs made before the option existed stay valid
            fields.pop("layout")
        fields["network"] = network
        return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class NetworkSpec:
    """How to build a network (not the network): what the Ray engine sends to each worker, which builds its own.

    ``name`` is anything :func:`camlens.zoo.load_network` takes (a torchvision or timm name, the bundled
    ``efficientnet_lite0``, or ``path/to/file.py:factory``); the other fields override the preprocessing.

    Example:
        >>> NetworkSpec("resnet18", weight_path="resnet18.pth").name
        'resnet18'
    """

    name: str = "efficientnet_lite0"
    weight_path: str | None = None
    offline: bool | None = None
    input_size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    labels: tuple[str, ...] | None = None
    random_weights: bool = False

    def build(self) -> Network:
        """Load the network (weights included), with the overrides applied; the result remembers this spec."""
        from camlens.zoo import load_network

        network = load_network(self.name, self.weight_path, offline=self.offline, random_weights=self.random_weights)
        if self.input_size is not None:
            network.input_size = (self.input_size, self.input_size)
        if self.mean is not None:
            network.mean = tuple(self.mean)
        if self.std is not None:
            network.std = tuple(self.std)
        if self.labels is not None:
            network.labels = list(self.labels)
        network.spec = self  # type: ignore[attr-defined]
        return network


@dataclass
class ImageResult:
    """One image's explanation: predictions, explained class, maps at the image's size, files written.

    ``maps`` are made from ``compact`` (what the run keeps and writes) the first time each is read.
    """

    path: str
    stem: str
    rgb: np.ndarray | None = None
    maps: Mapping[str, torch.Tensor] = field(default_factory=dict)
    probabilities: torch.Tensor | None = None
    class_id: int | None = None
    score: float = float("nan")
    layer: str | None = None
    error: str | None = None
    files: list[str] = field(default_factory=list)
    top: list[tuple[int, str, float]] = field(default_factory=list)  # (class, label, probability)
    class_name: str = ""
    notes: list[str] = field(default_factory=list)
    layout: str = ""  # how the layer's output was read, e.g. "tokens (1, 197, 384): 1 prefix token dropped, ..."
    guided_rule: str = ""  # e.g. "relu x17" or "generalised f'(x)*max(g,0) at gelu x12"
    probability: float | None = None  # of the explained class
    size: tuple[int, int] | None = None  # (width, height) of the image
    methods: tuple[str, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)  # filled by run(metrics=...): "method/metric" -> value
    blobs: dict[str, bytes] = field(default_factory=dict)  # encoded files (the Ray engine encodes in its workers)
    compact: CompactMaps | None = None  # the maps as stored (layer / input resolution): camlens.pipeline.maps

    @property
    def ok(self) -> bool:
        return self.error is None

    def record(self, network: str, key: str = "") -> dict[str, Any]:
        """The image's row of the results table (JSON-serialisable)."""
        probability = self.probability
        if probability is None and self.probabilities is not None and self.class_id is not None:
            probability = float(self.probabilities[self.class_id])
        return {
            "path": self.path,
            "stem": self.stem,
            "network": network,
            "status": "ok" if self.ok else "error",
            "error": self.error,
            "class_id": self.class_id,
            "class_name": self.class_name,
            "score": None if self.score != self.score else round(self.score, 6),
            "probability": None if probability is None else round(probability, 6),
            "layer": self.layer,
            "width": None if self.size is None else self.size[0],
            "height": None if self.size is None else self.size[1],
            "methods": list(self.methods),
            "topk": [{"class_id": c, "label": label, "probability": round(p, 6)} for c, label, p in self.top],
            "files": self.files,
            "notes": self.notes,
            "metrics": {k: None if v != v else float(v) for k, v in self.metrics.items()},
            "key": key,
            "source": _source_key(self.path),
        }

    def slim(self) -> None:
        """Drop the pixels, maps, encoded files and probabilities (what a long run must not keep)."""
        self.rgb = None
        self.maps = {}
        self.compact = None
        self.blobs = {}
        self.probabilities = None


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


# ------------------------------------------------------------------------------------------ inputs
def check_sources(paths: Iterable[str | os.PathLike]) -> None:
    """Fail at once, before any model is loaded, when a given file or folder does not exist (torch-free)."""
    for item in paths:
        if not os.path.lexists(item):
            raise UsageError(f"image {item} does not exist")


def collect_sources(
    paths: Iterable[str | os.PathLike], recursive: bool = False, on_note: Callable[[str], None] | None = None
) -> list[Path]:
    """Files as given, folders expanded to their image files (sorted by name); a folder with none is an error.

    Entries of a folder that cannot be images are left out; entries that look like images but cannot be read
    (a symbolic link loop, a broken link, a folder named ``x.jpg``) are kept, and become failed rows with
    their reason. Sub-folders are searched with ``recursive``; without it ``on_note`` hears how many were not.
    """
    from camlens.images import IMAGE_SUFFIXES

    found: list[Path] = []
    not_searched = 0
    for item in paths:
        path = Path(item)
        if path.is_dir():
            inside, folders = _scan(path, IMAGE_SUFFIXES, recursive, set())
            not_searched += folders
            if not inside:
                hint = f" ({folders} sub-folder{'s' * (folders != 1)} not searched: pass --recursive)" * bool(folders)
                raise UsageError(f"folder {path} holds no images{hint}")
            found.extend(inside)
        else:
            found.append(path)
    if not_searched and on_note is not None:
        on_note(
            f"{not_searched} sub-folder{'s were' if not_searched != 1 else ' was'} not searched "
            "(pass --recursive to explain the images in sub-folders too)"
        )
    return found


def _scan(folder: Path, suffixes: Any, recursive: bool, seen: set[tuple[int, int]]) -> tuple[list[Path], int]:
    """``folder``'s image entries (sorted; sub-folders' after, with ``recursive``) and its sub-folders not searched."""
    try:
        info = folder.stat()
        seen.add((info.st_dev, info.st_ino))  # a link back up the tree is not searched twice
    except OSError:
        pass
    images: list[Path] = []
    folders: list[Path] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            looks = Path(entry.name).suffix.lower() in suffixes
            try:
                is_dir = entry.is_dir()  # raises for a loop (a broken link is no folder)
            except OSError:  # a symbolic link loop: reported as a failed row (whatever its name)
                images.append(Path(entry.path))
                continue
            if is_dir and (recursive or not looks):
                folders.append(Path(entry.path))
            elif looks:
                images.append(Path(entry.path))  # files, and a folder or broken link named as an image: failed rows
    images.sort()
    if not recursive:
        return images, len(folders)
    for sub in sorted(folders):
        try:
            info = sub.stat()
        except OSError:
            continue
        if (info.st_dev, info.st_ino) in seen:
            continue
        inner, _ = _scan(sub, suffixes, True, seen)
        images.extend(inner)
    return images, 0


def done_count(
    network: str,
    sources: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    options: RunOptions = RunOptions(),
    recursive: bool = False,
) -> tuple[int, int]:
    """``(done, total)``: how many images of ``sources`` ``output_dir``'s table holds as done (what a resumed
    run skips), and how many there are."""
    paths = collect_sources(sources, recursive)
    key = options.key(network)
    done = {
        str(row.get("source"))
        for row in iter_table(Path(output_dir))
        if row.get("key") == key and row.get("network") == network and row.get("status") == "ok"
    }
    return sum(_source_key(str(p)) in done for p in paths), len(paths)


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
    """``absolute path:size:mtime``: an image counts as done only while its file is unchanged."""
    try:
        stat = os.stat(path)
    except OSError:
        return os.path.abspath(path) if path else path
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
    inputs: torch.Tensor | None = None,
) -> list[ImageResult]:
    """Explain decoded RGB images (H x W x 3 uint8) with ``network`` in one batch; nothing is written.

    ``inputs``: the model's input batch of ``rgbs`` when it is made already (:func:`prepare`).

    The maps come back at each image's own size (CAMs upsampled once from the layer map), each made when
    it is first read (``ImageResult.compact`` holds what they are made of).
    Raises :class:`~camlens.errors.UsageError` for a bad layer, class or method.
    """
    import camlens
    from camlens.images import to_batch
    from camlens.pipeline.maps import CompactMaps, PhotoMaps

    if not rgbs:
        return []
    device = device or resolve_device(options.device)
    model = network.model
    if inputs is None:
        inputs = to_batch(list(rgbs), network.input_size, network.mean, network.std)
    x = inputs.to(device)
    try:
        result = camlens.explain(
            model, x, list(options.methods), target_layer=options.target_layer, targets=options.class_id,
            layout=options.layout,
        )  # fmt: skip
    except (ValueError, TypeError) as error:
        raise UsageError(str(error)) from None
    probabilities = None if result.logits is None else result.logits.float().softmax(dim=1).cpu()
    metric_values = image_metrics(model, x, result, options) if options.metrics else [{} for _ in rgbs]
    found = getattr(result, "layout", None)
    layout = "" if found is None else found.describe()
    guided = _describe_guided(result)
    out = []
    for i, rgb in enumerate(rgbs):
        compact = CompactMaps.from_explanation(result, i, list(options.methods), rgb.shape[:2])
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
                maps=PhotoMaps(compact),
                compact=compact,
                probabilities=p,
                class_id=class_id,
                score=float(result.scores[i]),
                layer=result.target_layer,
                top=top,
                class_name="" if class_id is None else network.label(class_id),
                notes=list(result.image_warnings[i]),  # this image's own, without batch indices
                layout=layout,
                guided_rule=guided,
                probability=None if p is None or class_id is None else float(p[class_id]),
                size=(int(rgb.shape[1]), int(rgb.shape[0])),
                methods=tuple(options.methods),
                metrics=metric_values[i],
            )
        )
    return out


def image_metrics(model: nn.Module, x: torch.Tensor, result: Any, options: RunOptions) -> list[dict[str, float]]:
    """Every ``options.metrics`` of every method's map, per image: ``{"method/metric": value}``.

    The maps are the explanation's, at the model's input size, for the explained classes.
    """
    from camlens.metrics import evaluate

    steps = {"steps": options.metric_steps}
    rows = evaluate(
        model, x, {m: result[m] for m in options.methods}, list(options.metrics), result.classes,
        target_layer=options.target_layer, layout=options.layout, options={"deletion": steps, "insertion": steps},
    )  # fmt: skip
    values: list[dict[str, float]] = [{} for _ in range(x.shape[0])]
    for row in rows:
        values[row["image"]][f"{row['method']}/{row['metric']}"] = row["value"]
    return values


def _describe_guided(result: Any) -> str:
    rule = getattr(result, "guided_rule", None)
    if not rule:
        return ""
    counts = ", ".join(f"{kind} x{count}" for kind, count in rule.items())
    return f"generalised f'(x)*max(g,0) at {counts}" if result.guided_generalised else counts


def explain_batch(
    network: Network, items: list[tuple[Path, str, Any, Any]], options: RunOptions, device: torch.device
) -> list[ImageResult]:
    """Explain one batch of decoded items ``(path, stem, rgb or error text, input or None)`` (:func:`decode`);
    bad images become error results."""
    import torch

    good = [item for item in items if not isinstance(item[2], str)]
    tensors = [item[3] for item in good]
    explained = iter(
        explain_images(
            network,
            [rgb for _, _, rgb, _ in good],
            options,
            paths=[str(p) for p, _, _, _ in good],
            stems=[s for _, s, _, _ in good],
            device=device,
            inputs=torch.cat(tensors) if good and all(t is not None for t in tensors) else None,
        )
    )
    results = [
        ImageResult(str(p), s, error=rgb, methods=tuple(options.methods)) if isinstance(rgb, str) else next(explained)
        for p, s, rgb, _ in items
    ]
    for result in results:
        if result.stem != Path(result.path).stem:
            why = "another input has the same file name" if Path(result.path).stem in result.stem else "name too long"
            result.notes.append(f"written as {result.stem} ({why})")
    return results


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:1``, ``mps`` or ``auto``, checked here (:func:`camlens.device.resolve_device`)."""
    from camlens.device import resolve_device as resolve

    return resolve(name)


def check_layer(network: Network, layer: str | None, prefix: str = "") -> None:
    """Fail before any compute, with a :class:`UsageError`, when ``layer`` is not a layer of the network."""
    if layer is None:
        return
    from camlens.layers import resolve_layer

    try:
        resolve_layer(network.model, layer)
    except ValueError as error:
        raise UsageError(f"{prefix}{error}") from None


def caption(result: ImageResult) -> str:
    """The label an annotated picture carries: class name and probability (or the class number)."""
    if result.class_id is None:
        return "custom target"
    name = result.class_name or f"class {result.class_id}"
    probability = result.probability
    if probability is None and result.probabilities is not None:
        probability = float(result.probabilities[result.class_id])
    return name if probability is None else f"{name} {probability:.2f}"


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


PARTIAL_SUFFIX = ".part"
NAME_MAX = 255  # bytes in a file name (ext4, XFS, APFS, NTFS)


def fit_stem(stem: str, network: str, options: RunOptions) -> str:
    """``stem``, or where its longest output name would pass :data:`NAME_MAX` bytes, its start and a hash of it
    (``<start>~<8 hex>``): the same input always gets the same names, so a resumed run finds its files.

    Example:
        >>> fit_stem("a" * 240, "resnet18", RunOptions(methods=("gradcam",)))[-9:]
        '~c056f00f'
    """
    longest = max((len(name.encode()) for name in planned_files(stem, network, options)), default=0)
    if longest <= NAME_MAX:
        return stem
    raw = stem.encode()
    keep = raw[: max(0, len(raw) - (longest - NAME_MAX) - 9)].decode("utf-8", "ignore")
    return f"{keep}~{hashlib.sha1(raw).hexdigest()[:8]}"


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary name in the same folder and rename: readers never see half a file.

    The temporary is ``.camlens-<random>.part`` (short whatever the name: it always fits the folder's name
    limit); one left by a killed process is removed by the next run. The file gets the mode any new file
    gets (0666 less the umask), not mkstemp's 0600.
    """
    fd, tmp = tempfile.mkstemp(prefix=".camlens-", suffix=PARTIAL_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    """The process's umask (read from /proc where possible: setting it to read it races with other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_bytes(path: Path, data: bytes) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)

    _atomic(path, write)


def encode_image_files(result: ImageResult, network: str, options: RunOptions) -> dict[str, bytes]:
    """One image's pictures (and its maps file with ``save_maps``), encoded: file name -> bytes."""
    from camlens.pipeline.maps import image_file_arrays, npz_bytes
    from camlens.render import pictures

    assert result.rgb is not None
    blobs: dict[str, bytes] = {}
    cap = caption(result) if options.annotate else None
    fmt = "PNG" if options.image_format == "png" else "JPEG"
    for suffix, picture in pictures(result.rgb, result.maps, cap, options.colormap).items():
        blobs[f"{result.stem}-{network}-{suffix}.{options.image_format}"] = _encode(picture, fmt)
    if options.save_maps:
        assert result.compact is not None
        arrays = image_file_arrays(result.compact, result.stem, result.class_id, result.score)
        blobs[f"{result.stem}-{network}-maps.npz"] = npz_bytes(arrays)
    return blobs


def write_image_files(result: ImageResult, folder: Path, network: str, options: RunOptions) -> list[str]:
    """Write one image's pictures (and maps) atomically (encoded here unless ``result.blobs`` has them)."""
    blobs = result.blobs or encode_image_files(result, network, options)
    for name, data in blobs.items():
        _write_bytes(folder / name, data)
    return list(blobs)


def _encode(picture: np.ndarray, fmt: str) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    image = Image.fromarray(picture)
    if fmt == "JPEG":
        image.save(buffer, format="JPEG", quality=92)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_batch_maps(results: list[ImageResult], folder: Path, network: str, index: int) -> str:
    """``--no-pictures``: the batch's compact maps in one ``maps-<network>-<index>.npz`` (read it with
    :func:`camlens.pipeline.maps.load_maps`)."""
    from camlens.pipeline.maps import batch_file_arrays, npz_bytes

    arrays = batch_file_arrays([(r.stem, r.compact) for r in results if r.compact is not None])
    name = f"maps-{network}-{index:06d}.npz"
    _write_bytes(folder / name, npz_bytes(arrays))
    return name


def _next_map_index(folder: Path, network: str) -> int:
    """The first ``maps-<network>-<index>.npz`` index not used yet (a resumed run never replaces a batch file)."""
    prefix = f"maps-{network}-"
    used = [-1]
    if folder.is_dir():
        for entry in os.scandir(folder):
            if entry.name.startswith(prefix) and entry.name.endswith(".npz"):
                number = entry.name[len(prefix) : -len(".npz")]
                if number.isdigit():
                    used.append(int(number))
    return max(used) + 1


# ------------------------------------------------------------------------------------------ the table
def read_table(folder: Path, name: str = TABLE) -> list[dict[str, Any]]:
    """The rows of ``results.jsonl`` (a last line cut off by a kill is ignored)."""
    return list(iter_table(folder, name))


def iter_table(folder: Path, name: str = TABLE) -> Iterator[dict[str, Any]]:
    """The rows of ``results.jsonl`` one at a time (a last line cut off by a kill is skipped)."""
    path = folder / name
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def _append_rows(folder: Path, rows: list[dict[str, Any]], name: str = TABLE) -> None:
    with open(folder / name, "a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(row) + "\n" for row in rows))
        handle.flush()
        os.fsync(handle.fileno())


def _repair(folder: Path) -> None:
    """Undo what a killed run can leave: a last table line cut short, and ``.part`` temporaries."""
    if not folder.is_dir():
        return
    for table in (folder / TABLE, folder / JOURNAL):
        if table.is_file() and table.stat().st_size:
            with open(table, "rb+") as handle:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    handle.seek(0)
                    data = handle.read()
                    handle.truncate(data.rfind(b"\n") + 1)
    for entry in os.scandir(folder):
        if entry.name.startswith(".") and entry.name.endswith(PARTIAL_SUFFIX) and entry.is_file():
            Path(entry.path).unlink(missing_ok=True)


def _latest_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The final row of each image and network (``started`` rows mark work in progress and are left out)."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        if row.get("status") in ("ok", "error"):
            latest[(row.get("path", ""), row.get("network", ""))] = row
    return list(latest.values())


COLUMNS = (
    "path",
    "stem",
    "network",
    "status",
    "error",
    "class_id",
    "class_name",
    "score",
    "probability",
    "layer",
    "width",
    "height",
    "methods",
    "topk",
    "files",
    "notes",
    "key",
    "source",
)


def export_table(folder: Path) -> list[Path]:
    """Rewrite ``results.csv`` (and ``results.parquet`` when pyarrow is installed) from ``results.jsonl``.

    One row per image (its last result): the columns of :data:`COLUMNS`, then one ``metric_<name>``
    column per metric. In the CSV, lists are joined with ``;`` (top-k as ``class:probability``).
    """
    import csv

    rows = _latest_rows(iter_table(folder))
    if not rows:
        return []
    metric_names = sorted({name for row in rows for name in (row.get("metrics") or {})})
    flat = []
    for row in rows:
        item = {k: row.get(k) for k in COLUMNS}
        item["methods"] = ";".join(row.get("methods") or [])
        item["topk"] = ";".join(f"{t['class_id']}:{t['probability']}" for t in row.get("topk") or [])
        item["files"] = ";".join(row.get("files") or [])
        item["notes"] = ";".join(row.get("notes") or [])
        for name in metric_names:
            item[f"metric_{name}"] = (row.get("metrics") or {}).get(name)
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
        import pyarrow.parquet as pq
    except ImportError:
        return written
    table = _arrow_table(rows, metric_names)
    _atomic(folder / "results.parquet", lambda tmp: pq.write_table(table, tmp))
    written.append(folder / "results.parquet")
    return written


def _arrow_table(rows: list[dict[str, Any]], metric_names: list[str]) -> Any:
    """The rows as a pyarrow table with a fixed schema (all-null and empty columns keep their types)."""
    import pyarrow as pa

    text, integer, real = pa.string(), pa.int64(), pa.float64()
    top = pa.struct([("class_id", integer), ("label", text), ("probability", real)])
    types = {
        "class_id": integer,
        "score": real,
        "probability": real,
        "width": integer,
        "height": integer,
        "methods": pa.list_(text),
        "topk": pa.list_(top),
        "files": pa.list_(text),
        "notes": pa.list_(text),
    }
    fields = [pa.field(name, types.get(name, text)) for name in COLUMNS]
    fields += [pa.field(f"metric_{name}", real) for name in metric_names]
    schema = pa.schema(fields)
    if not rows:
        return schema.empty_table()
    # Through pyarrow's JSON reader rather than pa.table(python lists): converting Python objects makes
    # pyarrow import pandas to test for pandas types, about a second of a one-image command.
    import io

    import pyarrow.json as pj

    def clean(value: Any) -> Any:
        return None if isinstance(value, float) and not math.isfinite(value) else value

    lines = []
    for row in rows:
        item = {}
        for name in COLUMNS:
            value = row.get(name)
            item[name] = [] if value is None and name in ("methods", "topk", "files", "notes") else clean(value)
        for name in metric_names:
            item[f"metric_{name}"] = clean((row.get("metrics") or {}).get(name))
        lines.append(json.dumps(item, allow_nan=False))
    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
    data = io.BytesIO("\n".join(lines).encode("utf-8"))
    table = pj.read_json(
        data, parse_options=options, read_options=pj.ReadOptions(block_size=max(1 << 20, data.getbuffer().nbytes + 1))
    )
    return table.replace_schema_metadata({b"pandas": _PANDAS_INTEGERS})


# pandas metadata saying that the integer columns are nullable integers (Int64): pandas.read_parquet would
# otherwise read a column with a missing value (a failed image's class and size) as floats with NaN
_PANDAS_INTEGERS = json.dumps(
    {
        "index_columns": [],
        "column_indexes": [],
        "columns": [
            {"name": name, "field_name": name, "pandas_type": "int64", "numpy_type": "Int64", "metadata": None}
            for name in ("class_id", "width", "height")
        ],
    }
).encode()


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


LOCK = ".camlens.lock"  # held (flock) by the run writing into the folder; holds that run's pid


def lock_output_dir(out: Path) -> Callable[[], None]:
    """Take ``out``'s run lock (creating ``out`` if needed) or raise :class:`UsageError` naming the run holding it.

    Returns the release: it drops the lock, removes the lock file, and ``out`` too if this call created it
    and it is still empty. A lock left by a process that died is free (the system drops it with the process).
    """
    created = _make_dir(out)

    def remove_if_created() -> None:
        if created and not any(out.iterdir()):
            out.rmdir()

    try:
        import fcntl
    except ImportError:  # no flock (Windows): runs are not told apart
        return remove_if_created
    path = out / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise UsageError(_in_use(out, holder)) from None
        except OSError:  # a file system without locks (some network mounts): run unlocked
            os.close(fd)
            return remove_if_created
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino  # not a file another run removed meanwhile
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def release() -> None:
        try:
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
        remove_if_created()

    return release


def check_output_free(out: Path) -> None:
    """Raise :func:`lock_output_dir`'s :class:`UsageError` now if another run holds ``out`` (takes nothing):
    the CLI asks before it loads a model; the run itself then takes the lock."""
    try:
        import fcntl

        fd = os.open(out / LOCK, os.O_RDONLY)
    except (ImportError, OSError):
        return  # no lock file (or no folder, or no flock): free
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        raise UsageError(_in_use(out, holder)) from None
    except OSError:
        return
    finally:
        os.close(fd)


def _in_use(out: Path, holder: str) -> str:
    return f"another camlens run (pid {holder}) is writing into {out}: wait for it, or choose another --output-dir"


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
            :mod:`camlens.run_ray`; ``pip install camlens[ray]``).
        workers: with ``engine="ray"``, how many actors (default: one per GPU, else half the CPUs).
        recursive: search the folders' sub-folders too (without it, ``on_note`` hears how many were not).
        on_note: called with a line for the user (e.g. sub-folders not searched) before any image is done.

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
    paths = collect_sources(sources, recursive, on_note)
    stems = [fit_stem(stem, net.name, options) for stem in unique_stems(paths)]
    key = options.key(net.name)
    _repair(out)
    done: set[str] = set()
    ours: set[str] = set()  # absolute paths this folder's table holds with the same options
    for row in itertools.chain(iter_table(out), iter_table(out, JOURNAL)):
        if row.get("key") != key or row.get("network") != net.name:
            continue
        source = str(row.get("source", ""))
        ours.add(source.rsplit(":", 2)[0] if source.count(":") >= 2 else source)
        if options.resume and row.get("status") == "ok":
            done.add(source)
    todo = [(p, s) for p, s in zip(paths, stems, strict=True) if _source_key(str(p)) not in done]
    skipped = len(paths) - len(todo)
    if not options.overwrite:
        clash = [
            name
            for path, stem in todo
            if os.path.abspath(path) not in ours  # files of an interrupted run with these options are ours
            for name in planned_files(stem, net.name, options)
            if (out / name).exists()
        ]
        if clash:
            raise UsageError(
                f"{out / clash[0]} exists already ({len(clash)} files would be replaced): "
                "pass --overwrite, or choose another --output-dir"
            )
    timings = {"decode": 0.0, "model": 0.0, "write": 0.0}
    results: list[ImageResult] = []
    created = _make_dir(out)
    table_state = _TableState(out, net.name, key)
    if engine == "ray":
        from camlens.run_ray import explained_batches

        assert spec is not None
        batches: Iterator[list[ImageResult]] = explained_batches(spec, net.name, todo, options, workers, timings)
    else:
        assert device is not None
        net.model.to(device)
        batches = _explained_local(net, todo, options, device, timings)
    first_index = _next_map_index(out, net.name)
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
            writing.append(writer.submit(_write, merged, options, index, table_state, timings, encoders))
            while len(writing) > 2 or (writing and writing[0].done()):
                results.extend(_finish(writing.popleft(), on_result))
                if progress is not None:
                    progress(skipped + len(results), len(paths))
        while writing:
            results.extend(_finish(writing.popleft(), on_result))
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
        if created and not any(out.iterdir()):
            out.rmdir()
    return RunSummary(results, skipped, time.perf_counter() - start, out, table, timings, engine, tables)


def _explained_local(
    network: Network, todo: list[tuple[Path, str]], options: RunOptions, device: torch.device, timings: dict[str, float]
) -> Iterator[list[ImageResult]]:
    """The local engine: batches decoded two ahead by reader threads, explained here, in input order."""
    max_side = None if options.pictures else max(network.input_size) * 2
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
                reading.append((readers.submit(decode, part, max_side, spent, network), spent))
            decoded.append(reading)

    try:
        read_next()
        read_next()
        while decoded:
            items = []
            for future, spent in decoded.popleft():
                items += future.result()
                timings["decode"] += spent["decode"]
            read_next()
            t = time.perf_counter()
            explained = explain_batch(network, items, options, device)
            timings["model"] += time.perf_counter() - t
            yield explained
    finally:
        readers.shutdown(wait=True, cancel_futures=True)


def decode(
    batch: list[tuple[Path, str]], max_side: int | None, timings: dict[str, float], network: Network | None = None
) -> list[tuple[Path, str, Any, Any]]:
    """Read ``(path, stem)`` items: ``(path, stem, rgb or error text, network's input or None)``.

    With ``network``, each image is also made into its input (``(1, 3, H, W)``), here rather than in the
    thread that runs the model."""
    from camlens.images import read_image, to_batch

    t = time.perf_counter()
    items: list[tuple[Path, str, Any, Any]] = []
    for path, stem in batch:
        tensor = None
        try:
            rgb: Any = read_image(path) if max_side is None else read_image(path, max_side=max_side)
            if network is not None:
                tensor = to_batch([rgb], network.input_size, network.mean, network.std)
        except UsageError as error:
            rgb = str(error)
        except OSError as error:  # e.g. no permission to read: a failed row, like a bad image
            rgb = f"image {path} cannot be read ({error.strerror or error})"
        items.append((path, stem, rgb, tensor))
    timings["decode"] += time.perf_counter() - t
    return items


class _TableState:
    """The results table of one run.

    Before an image's files are written its ``started`` row goes into a journal beside the table (so that
    the next run knows those files are its own to replace), after them its final row into the table; the
    journal is removed when the run completes. Rows of bad images wait until a first image
    succeeds, so that a run in which nothing could be explained leaves nothing behind.
    """

    def __init__(self, out: Path, network: str, key: str) -> None:
        self.out, self.network, self.key = out, network, key
        self.pending: list[dict[str, Any]] = []
        self.started = False

    def begin(self, results: list[ImageResult]) -> None:
        rows = [
            {
                "path": r.path,
                "network": self.network,
                "status": "started",
                "key": self.key,
                "source": _source_key(r.path),
            }
            for r in results
            if r.ok
        ]
        if rows:
            self.started = True
            _append_rows(self.out, rows, JOURNAL)

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
    results: list[ImageResult],
    options: RunOptions,
    index: int,
    table: _TableState,
    timings: dict[str, float],
    encoders: ThreadPoolExecutor | None = None,
) -> list[ImageResult]:
    t = time.perf_counter()
    ok = [r for r in results if r.ok]
    table.begin(results)
    if options.pictures:
        unencoded = [r for r in ok if not r.blobs]  # (the Ray engine's workers encode their own)
        if encoders is not None and len(unencoded) > 1:
            encoded = encoders.map(lambda r: encode_image_files(r, table.network, options), unencoded)
            for r, blobs in zip(unencoded, encoded, strict=True):
                r.blobs = blobs
        for r in ok:
            r.files = write_image_files(r, table.out, table.network, options)
            r.blobs = {}
    elif ok:
        name = write_batch_maps(ok, table.out, table.network, index)
        for r in ok:
            r.files = [name]
    table.add(results)
    timings["write"] += time.perf_counter() - t
    return results


def _finish(future: Future[list[ImageResult]], on_result: Callable[[ImageResult], None] | None) -> list[ImageResult]:
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
        check_layer(network, layer, f"{network.name}: ")
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
                plain = pictures(result.rgb, result.maps, None, options.colormap)  # type: ignore[arg-type]
                table.rows.append(
                    CompareRow(
                        network.name,
                        prediction,
                        pictures(result.rgb, result.maps, cap, options.colormap) if cap else plain,  # type: ignore[arg-type]
                        result.layer or "",
                        explained,
                        dict(result.metrics),
                        plain=plain,
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

"""``camlens explain`` and ``camlens compare``: the seed projects' experiments in one command, offline.

Every bad input ends in one line on stderr and exit status 2, with nothing written: pictures are
rendered into a staging folder beside the output folder and moved in only when everything succeeded.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from camlens.errors import UnknownName, UsageError

PICTURES = {  # method -> [(suffix, kind)]
    "gradcam": [("heatmap", "heat"), ("cam", "overlay")],
    "gradcam++": [("heatmap++", "heat"), ("cam++", "overlay")],
    "guided_backprop": [("gb", "gradient")],
    "guided_gradcam": [("cam_gb", "gradient")],
}
COMPARE_COLUMNS = ["original", "heatmap", "Grad-CAM", "heatmap++", "Grad-CAM++", "guided backprop", "Guided Grad-CAM"]
COMPARE_SUFFIXES = ["heatmap", "cam", "heatmap++", "cam++", "gb", "cam_gb"]


@dataclass
class Timer:
    """Where the time goes: model loading, the models' forward/backward, image I/O and pictures."""

    seconds: dict[str, float] = field(default_factory=lambda: {"load": 0.0, "model": 0.0, "io": 0.0})

    def add(self, key: str, start: float) -> float:
        now = time.perf_counter()
        self.seconds[key] += now - start
        return now

    def summary(self) -> str:
        s = self.seconds
        total = sum(s.values()) or 1.0
        return (
            f"time: models {s['load'] + s['model']:.2f} s (loading {s['load']:.2f} s, explaining {s['model']:.2f} s), "
            f"images and pictures {s['io']:.2f} s ({100 * s['io'] / total:.0f}%)"
        )


# ------------------------------------------------------------------------------------------ parsing
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="camlens", description="Why did the vision model predict that? Grad-CAM, Grad-CAM++, guided backprop."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    ex = sub.add_parser("explain", help="explain one or more images (files or folders) with one network")
    ex.add_argument("images", nargs="*", metavar="IMAGE")
    ex.add_argument("--image-path", action="append", default=[], help="an image (the seed projects' flag)")
    _network_options(ex)
    ex.add_argument("--network", default=None, help="torchvision or timm name (default: efficientnet_lite0, bundled)")
    ex.add_argument("--weight-path", default=None, help="state dict or checkpoint for the network")
    ex.add_argument("--layer-name", default=None, help="dotted layer name (default: automatic)")
    ex.add_argument("--class-id", type=int, default=None, help="class to explain (default: the predicted one)")
    ex.add_argument(
        "--methods", nargs="+", default=None, help="subset of: gradcam gradcam++ guided_backprop guided_gradcam"
    )
    ex.add_argument("--save-maps", action="store_true", help="also write {stem}-{network}-maps.npz")
    ex.add_argument("--topk", type=int, default=5, help="how many predictions to print (default 5)")
    ex.add_argument("--batch-size", type=int, default=8)

    cmp_ = sub.add_parser("compare", help="one image, several networks: a comparison table (PNG, HTML, Markdown)")
    cmp_.add_argument("images", nargs="*", metavar="IMAGE")
    cmp_.add_argument("--image-path", action="append", default=[])
    cmp_.add_argument("--networks", required=True, help="comma-separated names, e.g. vgg16,resnet50,densenet121")
    cmp_.add_argument("--weights", action="append", default=[], metavar="NETWORK=FILE", help="weights for one network")
    _network_options(cmp_)
    return parser


def _network_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", default="results")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps ...")
    parser.add_argument("--offline", action="store_true", help="never try to download weights")
    parser.add_argument("--model", default=None, metavar="FILE.py:FACTORY", help="your own model")
    parser.add_argument("--input-size", type=int, default=None, help="input side for --model (default 224)")
    parser.add_argument("--mean", type=float, nargs=3, default=None)
    parser.add_argument("--std", type=float, nargs=3, default=None)
    parser.add_argument("--labels", default=None, help="class names file, one per line, for --model")


# ------------------------------------------------------------------------------------------ helpers
def _existing_ancestor(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def _output_dir(path: str) -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"output dir {out} is a file")
    existing = _existing_ancestor(out)
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"output dir {out} cannot be written ({existing} is not writable)")
    return out


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r} (try cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name} is not available here (no CUDA); use --device cpu")
    return device


def _network(args: argparse.Namespace, name: str | None, weight_path: str | None):
    from camlens.zoo import DEFAULT_NETWORK, load_network

    spec = args.model or name or DEFAULT_NETWORK
    network = load_network(spec, weight_path, offline=True if args.offline else None)
    if args.input_size is not None:
        if args.input_size < 8:
            raise UsageError(f"--input-size {args.input_size} is too small")
        network.input_size = (args.input_size, args.input_size)
    if args.mean is not None:
        network.mean = tuple(args.mean)
    if args.std is not None:
        if any(v <= 0 for v in args.std):
            raise UsageError("--std values must be positive")
        network.std = tuple(args.std)
    if args.labels is not None:
        path = Path(args.labels)
        if not path.is_file():
            raise UsageError(f"labels file {path} does not exist")
        network.labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return network


def _pictures(rgb: np.ndarray, maps: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The seeds' pictures for one image, from maps already at the image's size."""
    from camlens.viz import gradient_image, jet, overlay

    out: dict[str, np.ndarray] = {}
    for method, tensor in maps.items():
        array = tensor.detach().cpu().float().numpy()
        for suffix, kind in PICTURES[method]:
            if kind == "heat":
                out[suffix] = jet(array)
            elif kind == "overlay":
                out[suffix] = overlay(rgb, jet(array))
            else:
                out[suffix] = gradient_image(np.transpose(array, (1, 2, 0)))
    return out


@dataclass
class CompareRow:
    """One network's row of the comparison table."""

    name: str
    prediction: str  # "label (probability)", or why the network is unavailable
    pictures: dict[str, np.ndarray] | None = None  # None: unavailable
    layer: str = ""


@dataclass
class Explained:
    rgb: np.ndarray
    maps: dict[str, torch.Tensor]  # at the image's size, on the CPU
    probabilities: torch.Tensor | None
    class_id: int | None
    score: float
    layer: str | None


def _maps_at_image_size(result, i: int, methods: list[str], size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """One image's maps at its own size: CAMs upsampled from the layer map in one bilinear step."""
    from camlens.explain import GUIDED_GRADCAM
    from camlens.postprocess import cam_to_image
    from camlens.viz import resize_maps

    maps: dict[str, torch.Tensor] = {}
    for m in methods:
        if m in result.raw:
            maps[m] = cam_to_image(result.raw[m][i : i + 1].float().cpu(), size)[0]
        elif m != GUIDED_GRADCAM:
            maps[m] = resize_maps(result[m][i : i + 1].float().cpu(), size)[0]
    if GUIDED_GRADCAM in methods:
        gradient = maps.get("guided_backprop")
        if gradient is None:
            gradient = resize_maps(result["guided_backprop"][i : i + 1].float().cpu(), size)[0]
        cam = maps.get("gradcam")
        if cam is None:
            cam = cam_to_image(result.raw["gradcam"][i : i + 1].float().cpu(), size)[0]
        maps[GUIDED_GRADCAM] = gradient * cam[None]
    return {m: maps[m] for m in methods}


def _explain_images(
    network,
    rgbs: list[np.ndarray],
    methods: list[str],
    layer: str | None,
    class_id: int | None,
    device: torch.device,
    batch_size: int,
    timer: Timer,
    progress: bool = False,
) -> list[Explained]:
    from tqdm import tqdm

    import camlens
    from camlens.images import to_batch

    model = network.model.to(device)
    results: list[Explained] = []
    starts = range(0, len(rgbs), batch_size)
    for start in tqdm(starts, desc="explaining", unit="batch", disable=not progress, file=sys.stderr):
        t = time.perf_counter()
        chunk = rgbs[start : start + batch_size]
        x = to_batch(chunk, network.input_size, network.mean, network.std).to(device)
        t = timer.add("io", t)
        try:
            result = camlens.explain(model, x, methods, target_layer=layer, targets=class_id)
        except ValueError as error:
            raise UsageError(str(error)) from None
        probabilities = None if result.logits is None else result.logits.float().softmax(dim=1).cpu()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = timer.add("model", t)
        for i, rgb in enumerate(chunk):
            maps = _maps_at_image_size(result, i, methods, rgb.shape[:2])
            classes = result.classes
            results.append(
                Explained(
                    rgb=rgb,
                    maps=maps,
                    probabilities=None if probabilities is None else probabilities[i],
                    class_id=None if classes is None else int(classes[i]),
                    score=float(result.scores[i]),
                    layer=result.target_layer,
                )
            )
        timer.add("io", t)
    return results


def _save_jpg(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path, quality=92)


def _write_staged(out: Path, write: Callable[[Path], None]) -> list[Path]:
    """Run ``write(folder)`` into a staging folder beside ``out``; move its files into ``out`` only if it
    succeeds. Whatever happens, the staging folder is removed: a failure leaves no partial output."""
    staging = Path(tempfile.mkdtemp(prefix=".camlens-", dir=_existing_ancestor(out)))
    try:
        write(staging)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for item in sorted(staging.iterdir()):
            os.replace(item, out / item.name)
            written.append(out / item.name)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _images(args: argparse.Namespace) -> tuple[list[Path], list[np.ndarray]]:
    from camlens.images import collect_images, read_image

    given = list(args.images) + list(args.image_path)
    if not given:
        raise UsageError("no image given: camlens explain IMAGE [IMAGE ...]")
    paths = collect_images(given)
    return paths, [read_image(p) for p in paths]


# ------------------------------------------------------------------------------------------ commands
def run_explain(args: argparse.Namespace) -> int:
    from camlens.explain import SEED_METHODS, available_methods
    from camlens.layers import resolve_layer

    timer = Timer()
    t = time.perf_counter()
    out = _output_dir(args.output_dir)
    methods = list(dict.fromkeys(args.methods or SEED_METHODS))
    for m in methods:
        if m not in PICTURES:
            raise UsageError(f"unknown method {m!r}; choose from {', '.join(available_methods())}")
    if args.topk < 1:
        raise UsageError("--topk must be at least 1")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    device = _device(args.device)
    paths, rgbs = _images(args)
    t = timer.add("io", t)
    network = _network(args, args.network, args.weight_path)
    if args.layer_name is not None:
        try:
            resolve_layer(network.model, args.layer_name)
        except ValueError as error:
            raise UsageError(str(error)) from None
    t = timer.add("load", t)
    results = _explain_images(
        network, rgbs, methods, args.layer_name, args.class_id, device, args.batch_size, timer, progress=len(rgbs) > 1
    )
    t = time.perf_counter()

    def write(folder: Path) -> None:
        for path, res in zip(paths, results, strict=True):
            base = f"{path.stem}-{network.name}"
            for suffix, picture in _pictures(res.rgb, res.maps).items():
                _save_jpg(picture, folder / f"{base}-{suffix}.jpg")
            if args.save_maps:
                arrays: dict[str, Any] = {
                    m: (v.numpy() if v.dim() == 2 else np.transpose(v.numpy(), (1, 2, 0))).astype(np.float32)
                    for m, v in res.maps.items()
                }
                np.savez_compressed(
                    folder / f"{base}-maps.npz",
                    **arrays,
                    class_id=np.int64(-1 if res.class_id is None else res.class_id),
                    score=np.float32(res.score),
                )

    written = _write_staged(out, write)
    timer.add("io", t)
    for path, res in zip(paths, results, strict=True):
        _report(path, network, res, args.topk)
    print(f"wrote {len(written)} files to {out}/")
    print(timer.summary())
    return 0


def _report(path: Path, network, res: Explained, topk: int) -> None:
    print(f"{path.name}  [{network.name}, weights: {network.weights}]")
    if res.probabilities is not None:
        values, indices = res.probabilities.topk(min(topk, res.probabilities.numel()))
        for rank, (p, i) in enumerate(zip(values.tolist(), indices.tolist(), strict=True), 1):
            print(f"  {rank}. {network.label(i):<30s} {p:6.3f}  (class {i})")
    cls = "" if res.class_id is None else f"class {res.class_id} ({network.label(res.class_id)}), "
    print(f"  explained: {cls}score {res.score:.3f}, layer {res.layer}")


def run_compare(args: argparse.Namespace) -> int:
    from camlens.explain import SEED_METHODS

    timer = Timer()
    t = time.perf_counter()
    out = _output_dir(args.output_dir)
    device = _device(args.device)
    paths, rgbs = _images(args)
    if len(paths) != 1:
        raise UsageError("compare takes one image")
    names = [n.strip() for n in args.networks.split(",") if n.strip()]
    if not names:
        raise UsageError("--networks is empty")
    weights: dict[str, str] = {}
    for item in args.weights:
        name, sep, file = item.partition("=")
        if not sep:
            raise UsageError(f"--weights takes NETWORK=FILE, got {item!r}")
        weights[name] = file
    t = timer.add("io", t)
    rgb, stem = rgbs[0], paths[0].stem
    rows: list[CompareRow] = []
    for name in names:
        t = time.perf_counter()
        try:
            network = _network(args, name, weights.get(name))
        except UnknownName:
            raise  # a typo, not missing weights: fatal, with suggestions
        except UsageError as error:
            rows.append(CompareRow(name, f"unavailable: {error}"))
            timer.add("load", t)
            continue
        t = timer.add("load", t)
        (res,) = _explain_images(network, [rgb], list(SEED_METHODS), None, None, device, 1, timer)
        t = time.perf_counter()
        prediction = ""
        if res.probabilities is not None:
            top = int(res.probabilities.argmax())
            prediction = f"{network.label(top)} ({float(res.probabilities[top]):.2f})"
        rows.append(CompareRow(network.name, prediction, _pictures(rgb, res.maps), res.layer or ""))
        network.model.cpu()
        del network
        timer.add("io", t)

    t = time.perf_counter()
    written = _write_staged(out, lambda folder: _write_compare(folder, stem, rgb, rows))
    timer.add("io", t)
    for row in rows:
        shown = row.prediction if row.pictures is not None else "unavailable"
        print(f"{row.name:<22s} {shown}" + (f"  [layer {row.layer}]" if row.layer else ""))
    print(f"wrote {len(written)} files to {out}/ (table: {stem}-compare.png, .html, .md)")
    print(timer.summary())
    return 0


def _embedded_jpeg(array: np.ndarray, side: int = 224) -> str:
    image = Image.fromarray(array)
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _write_compare(folder: Path, stem: str, rgb: np.ndarray, rows: list[CompareRow]) -> None:
    from camlens.viz import grid

    table_rows = []
    for row in rows:
        pictures = row.pictures
        cells: list[np.ndarray | None] = [rgb]
        cells += [pictures[s] for s in COMPARE_SUFFIXES] if pictures else [None] * len(COMPARE_SUFFIXES)
        table_rows.append((f"{row.name}\n{row.prediction}", cells))
    grid(table_rows, COMPARE_COLUMNS).save(folder / f"{stem}-compare.png")
    _save_jpg(rgb, folder / f"{stem}.jpg")

    md = [
        "| network | prediction | " + " | ".join(COMPARE_COLUMNS[1:]) + " |",
        "|" + " --- |" * (len(COMPARE_COLUMNS) + 1),
    ]
    body = []
    original = _embedded_jpeg(rgb)
    for row in rows:
        name, prediction, pictures, layer = row.name, row.prediction, row.pictures, row.layer
        if pictures is None:
            md.append(f"| {name} | {prediction} |" + " n/a |" * (len(COMPARE_COLUMNS) - 1))
            row_cells = "".join("<td>n/a</td>" for _ in COMPARE_SUFFIXES)
        else:
            for suffix, picture in pictures.items():
                _save_jpg(picture, folder / f"{stem}-{name}-{suffix}.jpg")
            md.append(
                f"| {name} | {prediction} | "
                + " | ".join(f"![]({stem}-{name}-{s}.jpg)" for s in COMPARE_SUFFIXES)
                + " |"
            )
            row_cells = "".join(f'<td><img src="{_embedded_jpeg(pictures[s])}"></td>' for s in COMPARE_SUFFIXES)
        layer_note = f"<br><small>layer {html.escape(layer)}</small>" if layer else ""
        body.append(
            f"<tr><th>{html.escape(name)}<br><small>{html.escape(prediction)}</small>{layer_note}</th>"
            f'<td><img src="{original}"></td>{row_cells}</tr>'
        )
    (folder / f"{stem}-compare.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["network", *COMPARE_COLUMNS])
    (folder / f"{stem}-compare.html").write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>camlens: " + html.escape(stem) + "</title>"
        "<style>body{font-family:sans-serif}td img{width:160px}th{text-align:left;vertical-align:top}</style></head>"
        f"<body><h1>camlens comparison: {html.escape(stem)}</h1><table><tr>{head}</tr>{''.join(body)}</table>"
        "</body></html>\n",
        encoding="utf-8",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``camlens`` command. Returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        with torch.inference_mode(False):
            return run_explain(args) if args.command == "explain" else run_compare(args)
    except UsageError as error:
        print(f"camlens: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("camlens: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - one line, never a traceback (CAMLENS_DEBUG=1 shows it)
        if os.environ.get("CAMLENS_DEBUG"):
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(f"camlens: error: {type(error).__name__}: {message[:300]}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

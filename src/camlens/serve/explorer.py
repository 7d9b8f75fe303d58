"""The viewer's model side, free of any web framework: uploads, runs, an LRU cache, PNG encoding.

One :class:`Explorer` owns the networks and one lock: every forward/backward and every network load
runs under it, so concurrent requests queue instead of racing on one model. An upload is decoded in
memory (never written to disk) and kept, downsized, in an LRU cache under an id; each run explains the
top-k classes of one image with one batched :func:`camlens.explain` call (the image repeated k times,
one target class per copy: one forward, one backward) and keeps the result in a second LRU cache, so
maps for another class, or the same view again, cost no model run.
"""

from __future__ import annotations

import base64
import contextlib
import io
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

import camlens
from camlens.errors import UsageError, check_names
from camlens.explanation import check_methods
from camlens.images import decode_image, to_batch
from camlens.layers import candidate_layers, default_layer
from camlens.postprocess import normalize_per_image
from camlens.serve.limits import MAX_UPLOAD_BYTES as MAX_UPLOAD_BYTES
from camlens.serve.limits import MAX_UPLOAD_PIXELS as MAX_UPLOAD_PIXELS
from camlens.serve.limits import ServeError as ServeError
from camlens.serve.limits import megabytes as megabytes
from camlens.viz import gradient_image
from camlens.zoo import DEFAULT_NETWORK, SEED_NETWORKS, Network, load_network

WORKING_SIDE = 1024  # uploads are kept at most this long on their longer side
VIEW_SIDE = 384  # maps are sent at most this long on their longer side
MAX_TOPK = 10
MAX_PROMPTS = 16  # texts explained per upload of an image-text model
MAX_PROMPT_CHARS = 200
TEXT_DEFAULT_METHODS = ("gradcam", "gradcam++")  # an image-text model's maps when a request names none
DETECTION_DEFAULT_METHODS = ("gradcam",)  # a detector's maps when a request names none
MAX_BOXES = 50  # boxes explained per upload of a detector
DEFAULT_BOXES = 20
SEED_HEADERS = {  # the seeds' picture names -> the column headers of `camlens compare`
    "heatmap": "heatmap",
    "cam": "Grad-CAM",
    "heatmap++": "heatmap++",
    "cam++": "Grad-CAM++",
    "gb": "guided backprop",
    "cam_gb": "Guided Grad-CAM",
}
KINDS = {"heat": "heatmap", "overlay": "overlay", "gradient": "picture"}  # camlens.render's kinds -> the page's


class LRU:
    """A small thread-safe least-recently-used mapping."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class Upload:
    """One decoded image, kept in memory."""

    id: str
    name: str
    rgb: np.ndarray  # H x W x 3 uint8, at most WORKING_SIDE on its longer side


@dataclass
class Run:
    """The maps of the top-k classes of one image, from one batched ``explain`` call."""

    id: str
    upload: Upload
    network: str
    layer: str | None
    methods: list[str]
    counterfactual: bool
    classes: list[int]
    probabilities: list[float]
    scores: list[float]
    result: Any  # camlens.Explanation over the k copies of the image (or _PromptMaps: one map per prompt)
    seconds: float
    prompts: list[str] | None = None  # an image-text model's texts: "class" i is prompts[i]
    boxes: list[dict[str, Any]] | None = None  # a detector's explained boxes: "class" i is box i
    notes: list[str] = field(default_factory=list)  # about the run as a whole (e.g. methods left out)
    encoded: dict[int, dict[str, Any]] = field(default_factory=dict)
    faithfulness: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)


def _png(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=3)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _jpeg(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def fit_side(size: tuple[int, int], side: int) -> tuple[int, int]:
    """``(h, w)`` scaled down (never up) so that the longer side is at most ``side``."""
    h, w = size
    scale = min(1.0, side / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def shrink(rgb: np.ndarray, side: int) -> np.ndarray:
    """An RGB array resized (Lanczos) so that its longer side is at most ``side``."""
    h, w = fit_side(rgb.shape[:2], side)
    if (h, w) == rgb.shape[:2]:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.LANCZOS))


def map_pictures(method: str, spatial: bool) -> list[dict[str, str]]:
    """How the page shows one method's map, with the file suffixes of the CLI.

    A ``(H, W)`` map is sent once and shown twice, as a colourised ``heatmap`` and as an ``overlay`` on the
    image; a ``(C, H, W)`` map (guided backprop) is sent as a ready ``picture``.

    Example:
        >>> [p["title"] for p in map_pictures("gradcam", True)], map_pictures("guided_backprop", False)[0]["suffix"]
        (['heatmap', 'Grad-CAM'], 'gb')
    """
    from camlens.render import picture_kinds, title

    out = []
    for suffix, kind in picture_kinds(method, spatial):
        name = SEED_HEADERS.get(suffix) or (f"{title(method)} heatmap" if kind == "heat" else title(method))
        out.append({"title": name, "kind": KINDS[kind], "suffix": suffix})
    return out


def _kept(result: Any, methods: Sequence[str]) -> Any:
    """The explanation as a run keeps it: without the capture (the layer's activations and gradients,
    about 2.5 MB a run for EfficientNet-Lite0), unless Guided Grad-CAM's guided gradient is only there."""
    import dataclasses

    if "guided_gradcam" in methods and "guided_backprop" not in result.maps:
        return result
    return dataclasses.replace(result, capture=None)


@dataclass
class _PromptMaps:
    """One image's :class:`~camlens.text.TextExplanation` read as a run's result: entry ``t`` is prompt ``t``
    (``raw[m]`` ``(T, u, v)``, ``maps[m]`` ``(T, H, W)``), as an explanation of ``T`` copies would be; or one
    image's :class:`~camlens.detection.DetectionExplanation`: entry ``t`` is box ``t`` (``maps[m]`` ``(T, H, W)``
    at the image's size, no ``raw``)."""

    raw: dict[str, Tensor]
    maps: dict[str, Tensor]
    image_warnings: list[tuple[str, ...]]
    target_layer: str | None
    capture: Any = None

    def __getitem__(self, method: str) -> Tensor:
        return self.maps[method]


def release_memory() -> None:
    """Give freed heap memory back to the system (glibc ``malloc_trim``; elsewhere nothing)."""
    global _TRIM
    if _TRIM is None:
        try:
            import ctypes

            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM: Any = None


class Explorer:
    """Networks, uploads and runs behind one lock; every public method is safe to call from many threads.

    Args:
        network: the network shown first: a loaded :class:`~camlens.zoo.Network` or a name/spec for
            :func:`~camlens.zoo.load_network`.
        networks: the other names the page may switch to (loaded on first use; unavailable ones say why).
        device: where the model runs.
        examples_dir: a folder of example images offered on the page (None: none).
        topk: how many classes each upload explains.

    Example:
        >>> import io, torch; from PIL import Image; from camlens.zoo import Network
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        ...                             torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
        >>> explorer = Explorer(Network("tiny", model, (16, 16)), [], topk=2)
        >>> buffer = io.BytesIO(); Image.new("RGB", (20, 10), "red").save(buffer, format="PNG")
        >>> run = explorer.explain(explorer.add_upload(buffer.getvalue()), methods=["gradcam"])
        >>> len(run.classes), run.layer, explorer.model_runs
        (2, '1', 1)
        >>> sorted(explorer.class_maps(run, run.classes[1])["gradcam"])  # no model run
        ['pictures', 'png']
    """

    def __init__(
        self,
        network: Network | str = DEFAULT_NETWORK,
        networks: Sequence[str] = SEED_NETWORKS,
        *,
        device: str | torch.device = "cpu",
        examples_dir: str | Path | None = None,
        topk: int = 5,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
        max_upload_pixels: int = MAX_UPLOAD_PIXELS,
        cache_size: int = 16,
        loader: Callable[[str], Network] | None = None,
    ) -> None:
        if not 1 <= topk <= MAX_TOPK:
            raise ValueError(f"topk must be between 1 and {MAX_TOPK}, got {topk}")
        self.device = torch.device(device)
        self.topk = topk
        self.max_upload_bytes = max_upload_bytes
        self.max_upload_pixels = max_upload_pixels
        self._loader = loader or (lambda name: load_network(name, offline=True))
        self._lock = threading.Lock()
        self._networks: dict[str, Network] = {}
        self._layers: dict[str, tuple[list[str], str]] = {}
        self._unavailable: dict[str, str] = {}
        if isinstance(network, str):
            network = self._loader(network)
        self.default_network = network.name
        network.model.to(self.device)
        self._networks[network.name] = network
        self.network_names = list(dict.fromkeys([network.name, *networks]))
        self.examples_dir = Path(examples_dir) if examples_dir is not None else None
        self.uploads = LRU(cache_size)
        self.runs = LRU(cache_size * 2)
        self.model_runs = 0  # batched explain calls: what the page must not repeat for a class change
        self.metric_runs = 0  # faithfulness curves, computed on request

    # ----------------------------------------------------------------------------------- networks
    def network(self, name: str | None) -> Network:
        """The loaded network ``name`` (loaded now if needed), or a ServeError saying why not."""
        name = name or self.default_network
        if name not in self.network_names:
            raise ServeError(f"unknown network {name!r}; this server offers {', '.join(self.network_names)}", 404)
        if name in self._networks:
            return self._networks[name]
        if name in self._unavailable:
            raise ServeError(self._unavailable[name], 409)
        with self._lock:
            if name not in self._networks:
                try:
                    network = self._loader(name)
                except UsageError as error:
                    self._unavailable[name] = f"network {name} is unavailable: {error}"
                    raise ServeError(self._unavailable[name], 409) from None
                network.model.to(self.device)
                self._networks = {**self._networks, name: network}
        return self._networks[name]

    def layers(self, name: str | None) -> tuple[list[str], str]:
        """The layers a network can be explained at, in forward order (:func:`camlens.layers.candidate_layers`),
        and its automatic target layer."""
        network = self.network(name)
        if network.name not in self._layers and (self.is_text(network) or self.is_detector(network)):
            # explain_text picks the image tower's layer, explain_detections the detector's (each takes any module
            # name): the model's forward does not take a batch of images, so the candidate search does not apply
            self._layers[network.name] = ([], "")
        if network.name not in self._layers:
            x = torch.zeros(1, 3, *network.input_size, device=self.device)
            with self._lock:
                names = candidate_layers(network.model, x)
                default, _ = default_layer(network.model, x)
            self._layers[network.name] = (names, default)
        return self._layers[network.name]

    @staticmethod
    def is_text(network: Network) -> bool:
        """Whether ``network`` is an image-text model, explained per prompt (:func:`camlens.explain_text`)."""
        from camlens.text import is_image_text

        return is_image_text(network.model)

    @staticmethod
    def is_detector(network: Network) -> bool:
        """Whether ``network`` is an object detector, explained box by box (:func:`camlens.explain_detections`)."""
        from camlens.detection import is_detector

        return is_detector(network.model, network.adapter)

    def networks_info(self) -> list[dict[str, Any]]:
        return [
            {
                "name": n,
                "loaded": n in self._networks,
                "unavailable": self._unavailable.get(n),
                "prompts": self.is_text(self._networks[n]) if n in self._networks else None,  # None: not loaded
                "detector": self.is_detector(self._networks[n]) if n in self._networks else None,
            }
            for n in self.network_names
        ]

    def examples(self) -> list[str]:
        """The ``*.jpg`` files of the examples folder: plain files inside it (no symlinks, as ``/static``)."""
        if self.examples_dir is None or not self.examples_dir.is_dir():
            return []
        folder = self.examples_dir.resolve()
        return sorted(
            p.name
            for p in self.examples_dir.glob("*.jpg")
            if not p.is_symlink() and p.is_file() and p.resolve().parent == folder
        )

    def example_path(self, name: str) -> Path:
        """The file of example ``name``, or ServeError 404 (unknown, a symlink, or anywhere outside the folder)."""
        if self.examples_dir is None or name not in self.examples():
            raise ServeError(f"no example named {name!r}; examples: {', '.join(self.examples()) or 'none'}", 404)
        return self.examples_dir / name

    # ----------------------------------------------------------------------------------- uploads
    def add_upload(self, data: bytes, name: str = "the upload") -> Upload:
        """Decode image bytes in memory and keep them under a new id (ServeError 413/415/422 if bad)."""
        from camlens.images import ImageTooLarge, NotAnImage

        if len(data) > self.max_upload_bytes:
            raise ServeError(
                f"{name} is too large ({megabytes(len(data))}; the limit is {megabytes(self.max_upload_bytes)})", 413
            )
        try:
            rgb = decode_image(data, name, self.max_upload_pixels)
        except ImageTooLarge as error:
            raise ServeError(f"{error}; the limit is {self.max_upload_pixels / 1e6:.0f} megapixels", 413) from None
        except NotAnImage as error:
            raise ServeError(str(error), 415) from None
        except UsageError as error:
            raise ServeError(str(error), 422) from None
        upload = Upload(uuid.uuid4().hex, name, shrink(rgb, WORKING_SIDE))
        self.uploads.put(upload.id, upload)
        return upload

    def upload(self, image_id: str) -> Upload:
        upload = self.uploads.get(image_id)
        if upload is None:
            raise ServeError(f"no image with id {image_id!r} (it expired from the cache): upload it again", 404)
        return upload

    def example(self, name: str) -> Upload:
        return self.add_upload(self.example_path(name).read_bytes(), name)

    # ----------------------------------------------------------------------------------- runs
    def check(
        self,
        network: str | None = None,
        layer: str | None = None,
        methods: Sequence[str] | None = None,
        topk: int | None = None,
    ) -> tuple[Network, str, list[str], int]:
        """Resolve a request's options (loading the network if needed), or raise a ServeError saying why not."""
        net = self.network(network)
        try:
            if self.is_text(net):  # the page's classifier methods are accepted and left out with a note
                from camlens.text import available_text_methods

                known = list(dict.fromkeys([*available_text_methods(), *camlens.available_methods()]))
                methods = check_names(methods or TEXT_DEFAULT_METHODS, known)
            elif self.is_detector(net):  # likewise the classifier methods a detector cannot take
                from camlens.detection import detection_methods

                known = list(dict.fromkeys([*detection_methods(), *camlens.available_methods()]))
                methods = check_names(methods or DETECTION_DEFAULT_METHODS, known)
            else:
                methods = check_methods(methods or camlens.SEED_METHODS)
        except ValueError as error:
            raise ServeError(str(error), 422) from None
        k = self.topk if topk is None else topk
        if not 1 <= k <= MAX_TOPK:
            raise ServeError(f"topk must be between 1 and {MAX_TOPK}, got {k}", 422)
        layers, default = self.layers(net.name)
        layer = layer or default
        if layers and layer not in layers:
            raise ServeError(f"{net.name} has no spatial layer named {layer!r}", 422)
        return net, layer, methods, k

    def check_prompts(self, network: Network, prompts: Sequence[str] | None) -> list[str] | None:
        """The prompts of a request, cleaned (blank ones dropped, duplicates once), or a ServeError: an
        image-text network needs at least one, a classifier takes none."""
        given = list(dict.fromkeys(p.strip() for p in prompts or () if p.strip()))
        if not self.is_text(network):
            if given:
                raise ServeError(f"{network.name} is not an image-text model: prompts need one (e.g. open_clip)", 422)
            return None
        if not given:
            raise ServeError(f"{network.name} is an image-text model: give one or more prompts (prompt=a dog)", 422)
        if len(given) > MAX_PROMPTS:
            raise ServeError(f"at most {MAX_PROMPTS} prompts per image, got {len(given)}", 422)
        long = next((p for p in given if len(p) > MAX_PROMPT_CHARS), None)
        if long is not None:
            raise ServeError(f"a prompt is longer than {MAX_PROMPT_CHARS} characters: {long[:40]!r}...", 422)
        return given

    def explain(
        self,
        upload: Upload,
        network: str | None = None,
        layer: str | None = None,
        methods: Sequence[str] | None = None,
        counterfactual: bool = False,
        topk: int | None = None,
        prompts: Sequence[str] | None = None,
        score_threshold: float | None = None,
        max_boxes: int | None = None,
    ) -> Run:
        """Explain the top-k classes of ``upload`` with every method, in one batched call (one model run).

        An image-text network explains each of ``prompts`` instead (one :func:`camlens.explain_text` call:
        one image forward, the prompts' backward passes batched); its "classes" are the prompts' indices,
        their probabilities the softmax of the model's logits over the prompts, their scores the cosines.

        A detector explains each box it finds (score at least ``score_threshold``, default 0.5; the best
        ``max_boxes``, default 20) through the detection task of ``camlens detect``
        (:meth:`camlens.pipeline.detections.Detections.explain_images`: one forward, the boxes' backward passes
        batched); its "classes" are the boxes' indices, their probabilities and scores the boxes' scores.
        """
        net, layer, methods, k = self.check(network, layer, methods, topk)
        texts = self.check_prompts(net, prompts)
        if texts is not None:
            return self._explain_prompts(upload, net, layer or None, methods, texts)
        if self.is_detector(net):
            return self._explain_boxes(upload, net, layer or None, methods, score_threshold, max_boxes)
        if score_threshold is not None or max_boxes is not None:
            raise ServeError(f"{net.name} is not a detector: score_threshold and max_boxes are for detectors", 422)
        x = to_batch([upload.rgb], net.input_size, net.mean, net.std).to(self.device)
        with self._model_run() as timing:
            with torch.no_grad():
                logits = net.model(x)
            if not isinstance(logits, Tensor) or logits.dim() != 2:
                raise ServeError(f"{net.name} does not output (batch, classes) logits", 422)
            probabilities = logits.float().softmax(dim=1)[0]
            top = probabilities.topk(min(k, probabilities.numel()))
            classes = top.indices.tolist()
            try:
                result = camlens.explain(
                    net.model,
                    x.expand(len(classes), -1, -1, -1),
                    methods,
                    target_layer=layer,
                    targets=classes,
                    counterfactual=counterfactual,
                )
            except ValueError as error:
                raise ServeError(str(error), 422) from None
        seconds = timing[0]
        run = Run(
            id=uuid.uuid4().hex,
            upload=upload,
            network=net.name,
            layer=result.target_layer,
            methods=methods,
            counterfactual=counterfactual,
            classes=classes,
            probabilities=top.values.tolist(),
            scores=result.scores.float().tolist(),
            result=_kept(result, methods),
            seconds=seconds,
        )
        self.runs.put(run.id, run)
        release_memory()
        return run

    @contextlib.contextmanager
    def _model_run(self) -> Iterator[list[float]]:
        """One model run: under the model's lock, with autograd allowed, counted in :attr:`model_runs` when it
        finishes; its seconds (the device synchronised) are appended to the list it gives."""
        with self._lock:
            start = time.perf_counter()
            timing: list[float] = []
            with torch.inference_mode(False):
                yield timing
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            timing.append(time.perf_counter() - start)
            self.model_runs += 1

    def _explain_prompts(
        self, upload: Upload, net: Network, layer: str | None, methods: list[str], prompts: list[str]
    ) -> Run:
        from camlens.text import available_text_methods, explain_text, similarity_scale

        usable = [m for m in methods if m in available_text_methods()]
        if not usable:
            raise ServeError(
                f"none of {', '.join(methods)} explains an image-text model; choose from "
                f"{', '.join(available_text_methods())}",
                422,
            )
        left_out = [m for m in methods if m not in usable]
        notes = [f"not for image-text models, left out: {', '.join(left_out)}"] if left_out else []
        x = to_batch([upload.rgb], net.input_size, net.mean, net.std).to(self.device)
        with self._model_run() as timing:
            try:
                result = explain_text(net.model, x, prompts, usable, tokenizer=net.tokenizer, target_layer=layer)
            except ValueError as error:
                raise ServeError(str(error), 422) from None
        seconds = timing[0]
        similarity = result.similarity[0].float().cpu()
        probabilities = (similarity_scale(net.model) * similarity).softmax(dim=0)
        kept = _PromptMaps(
            {m: v[0].detach().cpu() for m, v in result.raw.items()},
            {m: v[0].detach().cpu() for m, v in result.maps.items()},
            [() for _ in prompts],
            result.target_layer,
        )
        run = Run(
            id=uuid.uuid4().hex,
            upload=upload,
            network=net.name,
            layer=result.target_layer,
            methods=usable,
            counterfactual=False,
            classes=list(range(len(prompts))),
            probabilities=probabilities.tolist(),
            scores=similarity.tolist(),
            result=kept,
            seconds=seconds,
            prompts=prompts,
            notes=notes,
        )
        self.runs.put(run.id, run)
        release_memory()
        return run

    @staticmethod
    def check_boxes(score_threshold: float | None, max_boxes: int | None) -> tuple[float, int]:
        """A detector request's score threshold and box count, or a ServeError 422 saying why not."""
        threshold = 0.5 if score_threshold is None else score_threshold
        count = DEFAULT_BOXES if max_boxes is None else max_boxes
        if not 0.0 <= threshold <= 1.0:
            raise ServeError(f"score_threshold must be between 0 and 1, got {threshold}", 422)
        if not 1 <= count <= MAX_BOXES:
            raise ServeError(f"max_boxes must be between 1 and {MAX_BOXES}, got {count}", 422)
        return threshold, count

    def _explain_boxes(
        self,
        upload: Upload,
        net: Network,
        layer: str | None,
        methods: list[str],
        score_threshold: float | None,
        max_boxes: int | None,
    ) -> Run:
        from camlens.detection import detection_methods
        from camlens.errors import UsageError
        from camlens.pipeline.detections import Detections

        threshold, count = self.check_boxes(score_threshold, max_boxes)
        usable = [m for m in methods if m in detection_methods()]
        if not usable:
            raise ServeError(
                f"none of {', '.join(methods)} explains a detector; choose from {', '.join(detection_methods())}", 422
            )
        left_out = [m for m in methods if m not in usable]
        notes = [f"not for detectors, left out: {', '.join(left_out)}"] if left_out else []
        task = Detections(threshold, count, labels=tuple(net.labels))
        with self._model_run() as timing:
            try:
                result, caught = task.explain_images(net, [upload.rgb], tuple(usable), layer, self.device)
            except (ValueError, TypeError, UsageError) as error:
                raise ServeError(" ".join(str(error).split()), 422) from None
        seconds = timing[0]
        notes += [note.removeprefix("image 0: ") for note in caught]
        detections = result.detections[0]
        if not detections:
            notes.append(f"no box scored at least {threshold:g}: lower the score threshold")
        height, width = upload.rgb.shape[:2]
        view_h, view_w = fit_side((height, width), VIEW_SIDE)
        scale = (view_w / width, view_h / height, view_w / width, view_h / height)
        boxes = [
            {
                "box": [float(v) for v in d.box],
                "view_box": [round(float(v) * f, 2) for v, f in zip(d.box, scale, strict=True)],
                "class": d.label,
                "class_name": task.label(d.label),
                "score": float(d.score),
            }
            for d in detections
        ]
        empty = torch.zeros(0, height, width)
        kept = _PromptMaps(
            {},
            {m: torch.stack([d.maps[m].detach().float().cpu() for d in detections]) if detections else empty
             for m in usable},
            [() for _ in detections],
            result.target_layer,
        )  # fmt: skip
        scores = [b["score"] for b in boxes]
        run = Run(
            id=uuid.uuid4().hex,
            upload=upload,
            network=net.name,
            layer=result.target_layer,
            methods=usable,
            counterfactual=False,
            classes=list(range(len(boxes))),
            probabilities=scores,
            scores=scores,
            result=kept,
            seconds=seconds,
            notes=notes,
            boxes=boxes,
        )
        self.runs.put(run.id, run)
        release_memory()
        return run

    def warm_up(self) -> None:
        """One explain of a grey image, so that the first upload does not pay for the first forward's setup."""
        if self.is_text(self._networks[self.default_network]):
            return  # the prompts are the user's (a tokenizer may know only its own words)
        grey = Upload("warm-up", "warm-up", np.full((64, 64, 3), 128, dtype=np.uint8))
        self.explain(grey)
        self.model_runs -= 1
        self.runs = LRU(self.runs.capacity)

    def run(self, run_id: str) -> Run:
        run = self.runs.get(run_id)
        if run is None:
            raise ServeError(f"no run with id {run_id!r} (it expired from the cache): explain the image again", 404)
        return run

    def faithfulness(self, run: Run, class_id: int, steps: int = 20) -> dict[str, Any]:
        """Deletion and insertion curves (RISE) of each CAM map of one class, from :mod:`camlens.metrics`.

        Needs the metrics (ServeError 501 without them); the maps are the run's, at the model's input
        size; the curves cost ``2 x (steps + 1)`` forwards per map, under the model's lock.
        """
        import importlib

        try:  # an optional part of camlens: looked up at run time
            metrics = importlib.import_module("camlens.metrics")
        except ImportError:
            raise ServeError("the faithfulness panel needs camlens.metrics, which this camlens lacks", 501) from None
        if run.prompts is not None:
            raise ServeError("deletion and insertion rank a class score: not available for prompts", 422)
        if run.boxes is not None:
            raise ServeError("deletion and insertion rank a class score: not available for a detector's boxes", 422)
        if class_id not in run.classes:
            raise ServeError(f"class {class_id} is not among this run's top {len(run.classes)} ({run.classes})", 404)
        if not 2 <= steps <= 100:
            raise ServeError(f"steps must be between 2 and 100, got {steps}", 422)
        key = (class_id, steps)
        if key not in run.faithfulness:
            i = run.classes.index(class_id)
            methods = [m for m in run.methods if run.result[m].dim() == 3]
            if not methods:
                raise ServeError("no CAM method in this run: deletion and insertion rank a (H, W) map", 422)
            net = self._networks[run.network]
            x = to_batch([run.upload.rgb], net.input_size, net.mean, net.std).to(self.device)
            xs = x.expand(len(methods), -1, -1, -1)
            maps = torch.stack([run.result[m][i] for m in methods]).to(self.device)
            targets = [class_id] * len(methods)
            with self._lock, torch.inference_mode(False):
                curves = {
                    name: metric(net.model, xs, maps, targets, steps=steps)
                    for name, metric in (("deletion", metrics.deletion), ("insertion", metrics.insertion))
                }
                self.metric_runs += 1
            run.faithfulness[key] = {
                "class_id": class_id,
                "fractions": curves["deletion"].fractions.tolist(),
                **{
                    name: {
                        "higher_is_better": result.higher_is_better,
                        "auc": dict(zip(methods, result.values.tolist(), strict=True)),
                        "curve": dict(zip(methods, result.curve.tolist(), strict=True)),
                    }
                    for name, result in curves.items()
                },
            }
        return run.faithfulness[key]

    # ----------------------------------------------------------------------------------- encoding
    def class_maps(self, run: Run, class_id: int) -> dict[str, Any]:
        """The maps of one of the run's classes at the view size, as PNG data URLs (no model run)."""
        if class_id not in run.classes:
            raise ServeError(
                f"class {class_id} is not among this run's top {len(run.classes)} ({run.classes}): "
                "explain with a larger topk",
                404,
            )
        if class_id not in run.encoded:
            i = run.classes.index(class_id)
            size = fit_side(run.upload.rgb.shape[:2], VIEW_SIDE)
            if run.boxes is not None:
                run.encoded[class_id] = {m: self._encode_box(run.result, m, i, size) for m in run.methods}
            else:
                run.encoded[class_id] = {m: self._encode(run.result, m, i, size) for m in run.methods}
        return run.encoded[class_id]

    @staticmethod
    def _encode(result: Any, method: str, i: int, size: tuple[int, int]) -> dict[str, Any]:
        from camlens.render import maps_at_size

        values = maps_at_size(result, i, [method], size)[method]
        if values.dim() == 2:
            if values.min() < 0 or values.max() > 1:
                values = normalize_per_image(values[None])[0]
            gray = (values.clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
            return {"pictures": map_pictures(method, True), "png": _png(gray)}
        picture = gradient_image(np.transpose(values.numpy(), (1, 2, 0)))
        if picture.shape[2] != 3:
            picture = np.repeat(picture[..., :1], 3, axis=2)
        return {"pictures": map_pictures(method, False), "png": _png(picture)}

    @staticmethod
    def _encode_box(result: Any, method: str, i: int, size: tuple[int, int]) -> dict[str, Any]:
        """Box ``i``'s map of ``method`` (``(H, W)`` in [0, 1] for every detection method) at ``size``."""
        from camlens.render import title
        from camlens.viz import resize_maps

        values = resize_maps(result.maps[method][i : i + 1].float(), size)[0].clamp(0, 1)
        gray = (values.numpy() * 255.0 + 0.5).astype(np.uint8)
        pictures = [
            {"title": f"{title(method)} heatmap", "kind": "heatmap", "suffix": f"{method}-heatmap"},
            {"title": title(method), "kind": "overlay", "suffix": method},
        ]
        return {"pictures": pictures, "png": _png(gray)}

    def describe(self, run: Run, include_all: bool = False) -> dict[str, Any]:
        """The JSON answer of an explain request: top-k, layer, the first class's maps (or all of them)."""
        net = self._networks[run.network]
        _, default = self._layers[run.network]
        view = shrink(run.upload.rgb, VIEW_SIDE)
        shown = run.classes if include_all else run.classes[:1]
        return {
            "run_id": run.id,
            "image_id": run.upload.id,
            "image_name": run.upload.name,
            "network": run.network,
            "layer": run.layer,
            "default_layer": default,
            "counterfactual": run.counterfactual,
            "methods": run.methods,
            "size": [int(view.shape[1]), int(view.shape[0])],
            "image": _jpeg(view),
            "prompts": run.prompts,
            "detector": run.boxes is not None,
            "notes": run.notes,
            "topk": [
                {
                    "class_id": c,
                    "label": self._label(run, net, c),
                    "probability": p,
                    "score": s,
                    "notes": list(notes),
                    **(run.boxes[c] if run.boxes is not None else {}),
                }
                for c, p, s, notes in zip(
                    run.classes, run.probabilities, run.scores, run.result.image_warnings, strict=True
                )
            ],
            "maps": {str(c): self.class_maps(run, c) for c in shown},
            "seconds": {"model": round(run.seconds, 4)},
            "model_runs": self.model_runs,
        }

    @staticmethod
    def _label(run: Run, net: Network, c: int) -> str:
        if run.prompts is not None:
            return run.prompts[c]
        if run.boxes is not None:
            return run.boxes[c]["class_name"]
        return net.label(c)

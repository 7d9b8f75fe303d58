"""What a run is asked for and what it gives per image: :class:`RunOptions`, :class:`NetworkSpec` (how to
build a network, what the Ray engine sends its workers) and :class:`ImageResult` (one image's record)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from camlens.names import GUIDED_METHODS, SEED_METHODS
from camlens.pipeline.sources import source_key

if TYPE_CHECKING:
    import numpy as np
    import torch

    from camlens.pipeline.maps import CompactMaps
    from camlens.zoo import Network


GRADIENT_METHODS = GUIDED_METHODS  # image-shaped (C, H, W) maps


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
    input_size: int | tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    labels: tuple[str, ...] | None = None
    random_weights: bool = False
    channels: int | None = None
    bands: tuple[int, int, int] | None = None

    def build(self) -> Network:
        """Load the network (weights included), with the overrides applied; the result remembers this spec.

        The channel count is ``channels``, or the model's first convolution's (:func:`camlens.zoo.network.
        input_channels`); ``mean`` and ``std`` give one value per channel, or one for all of them (default:
        ImageNet's for three channels, 0 and 1 otherwise, i.e. pixels in [0, 1])."""
        from camlens.errors import UsageError
        from camlens.zoo import load_network
        from camlens.zoo.network import input_channels

        network = load_network(self.name, self.weight_path, offline=self.offline, random_weights=self.random_weights)
        if self.input_size is not None:
            size = self.input_size
            network.input_size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        network.channels = self.channels or input_channels(network.model)
        count = network.channels
        if count != 3:
            network.mean, network.std = (0.0,) * count, (1.0,) * count
        for option, given in (("mean", self.mean), ("std", self.std)):
            if given is None:
                continue
            values = tuple(float(v) for v in given)
            if len(values) == 1:
                values *= count
            if len(values) != count:
                raise UsageError(
                    f"--{option} has {len(values)} values; {network.name} takes {count} channels: give one per "
                    "channel (or one for all)"
                )
            setattr(network, option, values)
        if self.bands is not None:
            if len(self.bands) != 3 or any(not 0 <= b < count for b in self.bands):
                shown = " ".join(map(str, self.bands))
                raise UsageError(f"--bands {shown}: give three of the {count} channels (0-based)")
            network.bands = (int(self.bands[0]), int(self.bands[1]), int(self.bands[2]))
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
            "source": source_key(self.path),
        }

    def slim(self) -> None:
        """Drop the pixels, maps, encoded files and probabilities (what a long run must not keep)."""
        self.rgb = None
        self.maps = {}
        self.compact = None
        self.blobs = {}
        self.probabilities = None

"""camlens's per-box Grad-CAM of a detector against pytorch-grad-cam's, on the same boxes, in one run.

For each detector, the boxes are the ones camlens explains (its best ``--boxes``); pytorch-grad-cam explains the
same boxes with ``GradCAM`` and ``FasterRCNNBoxScoreTarget(labels=[label], bounding_boxes=[box])``, one box per
call (its target sums the matched boxes' scores, so one call per box gives one map per box), at the same layer.
camlens explains all of an image's boxes in one call (one forward, one batched backward).

* **time per image**: camlens ``explain_detections(..., ["gradcam"])`` for all the boxes against pytorch-grad-cam's
  calls for the same boxes, timed round-robin (each round times both, back to back), medians over the rounds;
* **agreement**: per box, both maps min-max normalised again, their Pearson correlation and the largest absolute
  difference (median and worst over the boxes).

The definitions differ in three places, which is why each layer is measured with two targets:

1. ``FasterRCNNBoxScoreTarget`` explains ``IoU(reference, matched box) + score``: the IoU is a function of the
   box regression, so its gradient is explained too; camlens's ``target="score"`` explains the score alone. The
   row "score only" uses pytorch-grad-cam with the same match but the score alone (``ScoreOnlyTarget`` below).
   The tiny detector's boxes are not differentiable (a heat-map peak +- 6 px): there both targets are the score.
2. pytorch-grad-cam takes the ReLU on the layer's grid and then resizes (bilinear) to the input; camlens resizes
   the signed map to the input grid and then takes the ReLU. At a full-resolution layer (the tiny detector's
   ``features.1``) there is no resize and the two are the same map; elsewhere they differ near the map's zeros.
3. At an FPN (``backbone``, camlens's default layer: every level fused), pytorch-grad-cam's ``GradCAM`` gets no
   gradient: its gradient hook is only registered on a layer whose output is a tensor, and the FPN's is a dict
   (``grads`` is None and ``GradCAM`` fails). Its Faster R-CNN tutorial uses the gradient-free ``EigenCAM`` there,
   with ``fasterrcnn_reshape_transform`` (every level's ``abs`` resized to the coarsest grid, as channels). So the
   comparison is at one map of the backbone (``backbone.body.layer4``; ``backbone.body.13``, the FPN's first input of
   MobileNetV3), where both work.

Random weights with score threshold 0 give boxes; the RPN keeps its 100 best proposals (torchvision: 1000) so that
the box head's NMS over proposals x 91 classes does not dominate both libraries' times.

The images are square and of the detector's own size (``min_size = max_size``, a multiple of 32), so that
torchvision's transform neither resizes nor pads and both libraries' maps cover the same pixels.

    python benchmarks/detection_peers.py                        # 3 rounds, up to 8 boxes, 256 px Faster R-CNNs
    python benchmarks/detection_peers.py --rounds 2 --boxes 4 --size 128
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torchvision
from torch import Tensor, nn
from torchvision.models import detection as tvd

from camlens.detection import Detection, DetectorAdapter, explain_detections
from camlens.synthetic import square_adapter, square_scenes, trained_detector


class ScoreOnlyTarget:
    """``FasterRCNNBoxScoreTarget``'s match (the output box of largest IoU, above 0.5, of the same label) with the
    score alone as the target (camlens's ``target="score"``)."""

    def __init__(self, labels: list[int], bounding_boxes: list[list[float]], iou_threshold: float = 0.5) -> None:
        self.labels, self.bounding_boxes, self.iou_threshold = labels, bounding_boxes, iou_threshold

    def __call__(self, out: Mapping[str, Tensor]) -> Tensor:
        total = out["scores"].new_zeros(1)
        for box, label in zip(self.bounding_boxes, self.labels, strict=True):
            if len(out["boxes"]) == 0:
                continue
            ious = torchvision.ops.box_iou(torch.as_tensor([box], dtype=out["boxes"].dtype), out["boxes"])
            index = ious.argmax()
            if ious[0, index] > self.iou_threshold and out["labels"][index] == label:
                total = total + out["scores"][index]
        return total


class AdapterModule(nn.Module):
    """A detector camlens runs through an adapter, as pytorch-grad-cam calls it: ``model(batch) -> [dict]``."""

    def __init__(self, model: nn.Module, adapter: DetectorAdapter) -> None:
        super().__init__()
        self.model, self.adapter = model, adapter

    def forward(self, x: Tensor) -> list[Mapping[str, Any]]:
        return self.adapter.forward(self.model, list(x))


@dataclass
class Case:
    name: str
    model: nn.Module
    images: list[Tensor]
    adapter: DetectorAdapter | None
    layers: tuple[str, ...]
    box_iou_has_gradient: bool


def cases(size: int) -> list[Case]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # convolutions this small only lose to threads
    try:
        tiny = trained_detector()
    finally:
        torch.set_num_threads(threads)
    scenes, _ = square_scenes(2, torch.Generator().manual_seed(123))
    torch.manual_seed(0)
    frame = dict(min_size=size, max_size=size, box_score_thresh=0.0, rpn_post_nms_top_n_test=100)
    resnet = tvd.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91, **frame).eval()
    torch.manual_seed(0)
    mobile = tvd.fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None, num_classes=91, **frame)
    generator = torch.Generator().manual_seed(0)
    pictures = [torch.rand(3, size, size, generator=generator) for _ in range(2)]
    return [
        Case("tiny CenterNet (trained), 48 px", tiny, list(scenes), square_adapter(),
             ("features.1", "features"), False),
        Case(f"Faster R-CNN ResNet50-FPN (random), {size} px", resnet, pictures, None,
             ("backbone.body.layer4",), True),
        Case(f"Faster R-CNN MobileNetV3-FPN (random), {size} px", mobile.eval(), pictures, None,
             ("backbone.body.13",), True),
    ]  # fmt: skip


def camlens_boxes(case: Case, layer: str, boxes: int) -> list[list[Detection]]:
    result = explain_detections(
        case.model, case.images, ["gradcam"], target_layer=layer, score_threshold=0.0, max_detections=boxes,
        adapter=case.adapter,
    )  # fmt: skip
    return result.detections


def pgc_maps(case: Case, peer: Any, image: Tensor, detections: list[Detection], score_only: bool) -> list[np.ndarray]:
    """pytorch-grad-cam's GradCAM for each box of one image, one call per box."""
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    kind = ScoreOnlyTarget if score_only else FasterRCNNBoxScoreTarget
    maps = []
    for d in detections:
        target = kind(labels=[d.label], bounding_boxes=[list(d.box)] if score_only else np.array([d.box]))
        maps.append(peer(input_tensor=image[None], targets=[target])[0])
    return maps


def peer_for(case: Case, layer: str) -> Any:
    from pytorch_grad_cam import GradCAM

    model = copy.deepcopy(case.model)  # pytorch-grad-cam keeps hooks on its model: not on the one camlens explains
    wrapped = AdapterModule(model, case.adapter) if case.adapter is not None else model
    module = dict(model.named_modules())[layer]
    return GradCAM(model=wrapped, target_layers=[module])


def normalised(m: np.ndarray | Tensor) -> np.ndarray:
    a = np.asarray(m, dtype=np.float64)
    a = a - a.min()
    return a / a.max() if a.max() > 0 else a


def agreement(ours: Tensor, theirs: np.ndarray) -> tuple[float, float]:
    a, b = normalised(ours), normalised(theirs)
    if a.std() == 0 or b.std() == 0:
        return (1.0 if np.allclose(a, b) else 0.0), float(np.abs(a - b).max())
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1]), float(np.abs(a - b).max())


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="the Faster R-CNNs' square image (multiple of 32)")
    parser.add_argument("--boxes", type=int, default=8, help="boxes explained per image")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.size % 32:
        parser.error(f"--size must be a multiple of 32 (no padding by torchvision's transform), not {args.size}")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, {args.threads} threads, "
        f"{platform.processor() or platform.machine()}; up to {args.boxes} boxes per image, 2 images per detector, "
        f"medians of {args.rounds} round-robin rounds"
    )
    timing_rows, agreement_rows = [], []
    for case in cases(args.size):
        for layer in case.layers:
            found = camlens_boxes(case, layer, args.boxes)
            peer = peer_for(case, layer)
            print(f"{case.name}, {layer}: {[len(d) for d in found]} boxes", flush=True)
            targets = ["FasterRCNNBoxScoreTarget", "score only"] if case.box_iou_has_gradient else ["score"]
            for target in targets:
                scores = [
                    agreement(d.maps["gradcam"], theirs)
                    for image, detections in zip(case.images, found, strict=True)
                    for d, theirs in zip(
                        detections, pgc_maps(case, peer, image, detections, target == "score only"), strict=True
                    )
                ]
                r = [s[0] for s in scores]
                diff = [s[1] for s in scores]
                agreement_rows.append(
                    f"| {case.name} | `{layer}` | {target} | {len(scores)} | {statistics.median(r):.4f} "
                    f"| {min(r):.4f} | {statistics.median(diff):.4f} | {max(diff):.4f} |"
                )
            timing_rows.append(time_row(case, layer, peer, found, args))
    print()
    print("| detector | layer | boxes per image | camlens s per image | pytorch-grad-cam s per image "
          "| pytorch-grad-cam / camlens |")  # fmt: skip
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    print("\n".join(timing_rows))
    print()
    print("| detector | layer | pytorch-grad-cam target | boxes | Pearson median | Pearson min "
          "| max abs diff median | max abs diff max |")  # fmt: skip
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(agreement_rows))


def time_row(case: Case, layer: str, peer: Any, found: list[list[Detection]], args: argparse.Namespace) -> str:
    """Both libraries explain the same boxes of every image, back to back in each round; seconds per image."""
    per_image = [len(d) for d in found]
    contenders: dict[str, Callable[[], object]] = {
        "camlens": lambda: [
            explain_detections(
                case.model,
                [image],
                ["gradcam"],
                target_layer=layer,
                score_threshold=0.0,
                max_detections=args.boxes,
                adapter=case.adapter,
            )
            for image in case.images
        ],  # fmt: skip
        "pgc": lambda: [
            pgc_maps(case, peer, image, detections, False) for image, detections in zip(case.images, found, strict=True)
        ],
    }
    times: dict[str, list[float]] = {key: [] for key in contenders}
    for _ in range(args.rounds):
        for key, run in contenders.items():
            times[key].append(timed(run) / len(case.images))
    ours, theirs = (statistics.median(times[k]) for k in ("camlens", "pgc"))
    boxes = "/".join(str(n) for n in per_image)
    return f"| {case.name} | `{layer}` | {boxes} | {ours:.3f} | {theirs:.3f} | {theirs / ours:.1f}x |"


if __name__ == "__main__":
    main()

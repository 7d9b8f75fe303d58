"""What explaining a detector costs, as ratios measured side by side in one run (round-robin, medians).

* all boxes' Grad-CAM of one image (up to ``--boxes`` boxes, one forward, batched and per-box backwards) against
  one inference of the detector;
* D-RISE with ``--masks`` masks against ``--masks`` plain forwards of the detector in the same batches (and the
  one forward that finds the boxes); a plain forward is what gives a user detections: torchvision's detectors
  return them from ``model(images)``, an ultralytics model's raw head needs ultralytics' own NMS after it
  (``ultralytics.utils.nms.non_max_suppression`` at the thresholds camlens' adapter uses: confidence 0.001,
  IoU 0.7, 300 boxes), so for YOLO the last column also gives the ratio to the raw head alone;
* EigenCAM at the detection layer (every FPN level fused) against Grad-CAM.

torchvision detectors with random weights (timing does not depend on the weights' values), score thresholds at 0
so that random weights give boxes.

    python benchmarks/detection_speed.py                       # 320 px, 32 boxes, 64 masks, 3 rounds
    python benchmarks/detection_speed.py --size 256 --boxes 8 --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torchvision.models import detection as tvd
from torchvision.models import resnet18
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.ssd import SSD
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from camlens.detection import YOLO_CONFIDENCE, YOLO_MAX_BOXES, YOLO_NMS_IOU, _is_ultralytics, explain_detections


def detectors(size: int) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    fpn = dict(min_size=size, max_size=size)

    def resnet18_fpn() -> nn.Module:
        return _resnet_fpn_extractor(
            resnet18(weights=None), 5, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256)
        )

    found = {
        "Faster R-CNN MobileNetV3-FPN": tvd.fasterrcnn_mobilenet_v3_large_fpn(
            weights=None, weights_backbone=None, num_classes=91, box_score_thresh=0.0, **fpn
        ).eval(),
        "RetinaNet ResNet18-FPN": tvd.RetinaNet(resnet18_fpn(), num_classes=91, score_thresh=0.0, **fpn).eval(),
        "FCOS ResNet18-FPN": tvd.FCOS(resnet18_fpn(), num_classes=91, score_thresh=0.0, **fpn).eval(),
        "SSDlite320 MobileNetV3": tvd.ssdlite320_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=91, score_thresh=0.0
        ).eval(),
    }
    try:  # ultralytics YOLOv8n from its config (random weights), 80 classes
        from ultralytics.nn.tasks import DetectionModel

        yolo = DetectionModel("yolov8n.yaml", nc=80, verbose=False).eval()
        with torch.no_grad():  # class biases at 0 (scores near 0.5): the initial ones leave no box above 0.001
            for branch in yolo.model[-1].cv3:
                branch[-1].bias.zero_()
        found["YOLOv8n"] = yolo
    except ImportError:
        pass
    try:  # Hugging Face DETR with its default configuration (ResNet-50, 6 + 6 layers, 100 queries), random weights
        import transformers

        transformers.logging.set_verbosity_error()
        config = transformers.DetrConfig(use_timm_backbone=True, backbone="resnet50", use_pretrained_backbone=False)
        found["DETR ResNet-50"] = transformers.DetrForObjectDetection(config).eval()
    except ImportError:
        pass
    return found


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def plain_forwards(model: nn.Module, image: torch.Tensor, count: int, batch: int, nms: bool = True) -> None:
    """``count`` forwards of ``image`` in batches of ``batch``; ultralytics' models followed by ultralytics' NMS
    unless ``nms`` is false (the raw head alone)."""
    with torch.no_grad():
        done = 0
        while done < count:
            n = min(batch, count - done)
            if isinstance(model, GeneralizedRCNN | tvd.RetinaNet | tvd.FCOS | SSD):
                model([image.clone() for _ in range(n)])
            elif hasattr(model, "config"):  # Hugging Face: a batch of pixel values (camlens normalises them)
                model(pixel_values=torch.stack([image] * n))
            else:  # ultralytics: a batch padded to multiples of the stride, as camlens' adapter pads it
                h, w = image.shape[-2:]
                padded = torch.nn.functional.pad(image, (0, -w % 32, 0, -h % 32), value=114 / 255)
                raw = model(torch.stack([padded] * n))
                if nms:
                    from ultralytics.utils.nms import non_max_suppression

                    non_max_suppression(raw, conf_thres=YOLO_CONFIDENCE, iou_thres=YOLO_NMS_IOU, max_det=YOLO_MAX_BOXES)
            done += n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--boxes", type=int, default=32)
    parser.add_argument("--masks", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16, help="masked images per forward (D-RISE)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="", help="only the detectors whose name contains this text")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = torch.rand(3, args.size * 3 // 4, args.size, generator=torch.Generator().manual_seed(0))
    print(
        f"torch {torch.__version__}, {args.threads} threads, image 3 x {image.shape[1]} x {image.shape[2]}, "
        f"up to {args.boxes} boxes, {args.masks} masks in batches of {args.batch}; medians of {args.rounds} "
        "round-robin rounds"
    )
    print()
    print("| detector | boxes | inference s | Grad-CAM all boxes, batched | per-box loop | EigenCAM / Grad-CAM "
          f"| D-RISE {args.masks} masks / {args.masks} forwards |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, model in detectors(args.size).items():
        if args.only not in name:
            continue
        print(row(name, model, image, args), flush=True)


def row(name: str, model: nn.Module, image: torch.Tensor, args: argparse.Namespace) -> str:
    """One detector's line of the table: every contender timed once per round, back to back."""

    def explain(methods: list[str], backward: str = "auto", **options: object) -> object:
        return explain_detections(
            model, [image], methods, score_threshold=0.0, max_detections=args.boxes, backward=backward, **options
        )

    boxes = len(explain(["eigencam"]).detections[0])  # type: ignore[attr-defined]  # warm-up; how many boxes
    contenders: dict[str, Callable[[], object]] = {
        "inference": lambda: plain_forwards(model, image, 1, 1),
        "gradcam": lambda: explain(["gradcam"]),
        "gradcam loop": lambda: explain(["gradcam"], "loop"),
        "eigencam": lambda: explain(["eigencam"]),
        "drise": lambda: explain(["drise"], masks=args.masks, batch_size=args.batch),
        "forwards": lambda: plain_forwards(model, image, args.masks, args.batch),
    }
    yolo = _is_ultralytics(model)
    if yolo:  # the raw head alone, for the second figure
        contenders["raw inference"] = lambda: plain_forwards(model, image, 1, 1, nms=False)
        contenders["raw forwards"] = lambda: plain_forwards(model, image, args.masks, args.batch, nms=False)
    times: dict[str, list[float]] = {key: [] for key in contenders}
    for _ in range(args.rounds):
        for key, run in contenders.items():
            times[key].append(timed(run))
    med = {key: statistics.median(values) for key, values in times.items()}
    # the D-RISE call also runs the one forward that finds the boxes: compare it with masks + 1 forwards
    drise_ratio = f"{med['drise'] / (med['forwards'] + med['inference']):.2f}"
    if yolo:
        drise_ratio += f" (raw head: {med['drise'] / (med['raw forwards'] + med['raw inference']):.2f})"
    return (
        f"| {name} | {boxes} | {med['inference']:.3f} | {med['gradcam'] / med['inference']:.1f}x "
        f"| {med['gradcam loop'] / med['inference']:.1f}x | {med['eigencam'] / med['gradcam']:.2f} "
        f"| {drise_ratio} |"
    )


if __name__ == "__main__":
    main()

"""Object detectors by name, never downloaded: torchvision's (Faster R-CNN v1/v2/MobileNet, Mask R-CNN, Keypoint
R-CNN, RetinaNet, FCOS, SSD, SSDlite) and ultralytics YOLO v8 / 11 (``yolov8n`` ... ``yolo11x``).

Weights from ``weight_path``, else (torchvision) the local torch cache (``$TORCH_HOME/hub/checkpoints``); with
neither, :class:`~camlens.errors.MissingWeights` says where to put the file (``random_weights``: random ones, for
structure checks). torchvision's class names are its checkpoints' (COCO's 91 ids, ``__background__`` first;
Keypoint R-CNN's ``person``); YOLO's are COCO's 80 (the package's ``coco.yaml``). A YOLO model is built from the
package's model config (``yolov8n.yaml``); its weight file is a state dict (``torch.save(YOLO("yolov8n.pt")
.model.state_dict(), FILE)``: camlens never unpickles the checkpoint's Python objects), and the number of
classes is read from it. The detectors take the photo as it is (``Network.input_size`` is unused).
"""

from __future__ import annotations

import re

from camlens.errors import UsageError
from camlens.zoo.network import Network
from camlens.zoo.weights import fit_state_dict, local_state_dict, read_state_dict

YOLO_NAME = re.compile(r"^yolo(v8|11)[nsmlx]$")


def detector_names() -> list[str]:
    """Every torchvision detection model name, sorted (the YOLO names are ``yolov8n`` ... ``yolo11x``)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models.detection))


def knows_detector(name: str) -> str | None:
    """``name`` if it is a torchvision detector or a YOLO v8 / 11 name, else None."""
    if YOLO_NAME.match(name):
        return name
    return name if name in detector_names() else None


def load_detector(name: str, weight_path: str | None, offline: bool, random_weights: bool) -> Network:
    """Detector ``name`` with its class names (``offline``: nothing is downloaded either way)."""
    if YOLO_NAME.match(name):
        return _load_yolo(name, weight_path, random_weights)
    import torchvision
    weights = torchvision.models.get_model_weights(name).DEFAULT
    labels = list(weights.meta.get("categories", []))
    state, source = local_state_dict(name, weights, weight_path, random_weights)
    model = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=len(labels))
    if state is not None:
        fit_state_dict(model, state, source, name)  # raises with the keys that do not fit
    return Network(name, model.eval(), (800, 800), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), labels, source)


def _load_yolo(name: str, weight_path: str | None, random_weights: bool) -> Network:
    try:
        from ultralytics.nn.tasks import DetectionModel
        from ultralytics.utils import ROOT, YAML
    except ImportError:
        raise UsageError(f"{name} needs the ultralytics package: pip install 'camlens[detection]'") from None
    from camlens.zoo.names import RANDOM

    labels = [str(v) for _, v in sorted(YAML.load(ROOT / "cfg" / "datasets" / "coco.yaml")["names"].items())]
    state = None
    if weight_path is not None:
        state = read_state_dict(weight_path)
    elif not random_weights:
        raise UsageError(
            f"{name} has no weights here: pass --weights FILE (a state dict: torch.save(YOLO('{name}.pt')"
            ".model.state_dict(), FILE)), or --random-weights for structure checks"
        )
    classes = len(labels)
    if state is not None:
        found = [v.shape[0] for k, v in state.items() if re.search(r"\.cv3\.0\.2\.weight$", k)]
        classes = int(found[0]) if found else classes
    model = DetectionModel(f"{name}.yaml", nc=classes, verbose=False)
    if state is not None:
        fit_state_dict(model, state, str(weight_path), name)
    if classes != len(labels):
        labels = []
    return Network(name, model.eval(), (640, 640), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), labels,
                   RANDOM if state is None else str(weight_path))  # fmt: skip

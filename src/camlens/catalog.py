"""The one method catalog: a row per built-in method, without importing torch.

Everything that names a method derives from :data:`ROWS`: the registries ``explain`` reads
(:data:`camlens.methods.CAM_METHODS`, :data:`camlens.methods.CONTEXT_METHODS`, which import a row's
function only when it is first used), the torch-free constants of :mod:`camlens.names` (``METHODS``,
``SEED_METHODS``, ``CAM_METHODS``, ``METHOD_INFO``, ...), the command line's ``--methods`` choices and
``camlens methods``, the per-method classes of :mod:`camlens.explainers`, the picture titles
(:data:`camlens.render.METHOD_TITLES`), the multi-layer fusion rule and the methods table of
``docs/guide/methods.md``.

How to add a method:

1. Write its function, with a docstring giving the paper's formula: ``(A, g) -> (B, u, v)`` for a weighting
   of the target layer's activations and gradients (``kind="cam"``, e.g. in
   :mod:`camlens.methods.gradcam`), or ``(MethodContext) -> (B, h, w)`` for a method that needs more, the
   model again or the classifier (``kind="context"``, see :mod:`camlens.methods.context`). The map is
   signed, before the final ReLU.
2. Add one :class:`MethodRow` to :data:`ROWS` below, ``entry="camlens.methods.<module>:<function>"``.
3. Add its oracle test (the paper's formula by hand on a hand-built model, a closed form or a peer
   library), and run ``camlens methods --markdown`` into ``docs/guide/methods.md``'s table (a test says
   when it is stale).

Nothing else: the method is then in ``camlens.available_methods()``, ``explain``, ``--methods``,
``camlens methods``, ``camlens.explainers.<class_name>`` and the pictures' titles. Methods registered at run
time (:func:`camlens.methods.register_cam`, :func:`camlens.methods.register_method`) join the registries
after the built-in ones; they have no row.

>>> ROW["xgradcam"].title, ROW["xgradcam"].kind, ROW["xgradcam"].entry
('XGrad-CAM', 'cam', 'camlens.methods.gradcam:xgradcam')
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

KINDS = ("cam", "context", "guided")  # how the engine runs a method (see MethodRow.kind)
FUSIONS = ("mean", "max", "product", "first")  # how maps at several target layers are combined


@dataclass(frozen=True)
class MethodRow:
    """One built-in method.

    Attributes:
        name: the key of ``explain(methods=...)`` and ``--methods``.
        kind: ``"cam"``: a pure ``(A, g) -> map`` weighting of the one capture; ``"context"``: a function of a
            :class:`~camlens.methods.context.MethodContext` (classifier, graph, re-runs of the model);
            ``"guided"``: the guided-backprop input gradient the engine records in the same pass.
        family: a short family name, for ``camlens methods``.
        uses_layer: whether the method reads a target layer.
        title: the display name (pictures, figures, tables).
        paper: who and when (``""`` when the method has no paper of its own).
        entry: ``"module:function"``, imported when the method is first used (``""`` for ``guided``).
        class_name: its class in :mod:`camlens.explainers`.
        note: a few more words for ``camlens methods``.
        head: ``"module:function"`` of a head factory run on the recorded graph (``context`` methods).
        perturbation: runs the model again (its cost grows with channels or samples).
        any_layout: works on channels-last and token layers too (else: channels-first only, for
            ``context`` methods that re-run the model or differentiate the layer's own output).
        eigen: the method is a principal-component decomposition itself: ``eigen_smooth`` leaves it alone.
        fuse: how its image maps at several target layers are combined.
        vit_only: only vision transformers have what it needs (``--methods all`` leaves it out).
        planar: why the method is defined on 2-D images only (``explain`` refuses it on clips and volumes
            ``(B, C, T, H, W)`` with this reason); ``""``: it carries over to a 3-D layer.
        seed: one of the methods ``explain`` runs by default.
    """

    name: str
    kind: str
    family: str
    uses_layer: bool
    title: str
    paper: str
    entry: str
    class_name: str
    note: str = ""
    head: str = ""
    perturbation: bool = False
    any_layout: bool = False
    eigen: bool = False
    fuse: str = "mean"
    vit_only: bool = False
    planar: str = ""
    seed: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"method {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.fuse not in FUSIONS:
            raise ValueError(f"method {self.name!r}: fuse must be one of {FUSIONS}, got {self.fuse!r}")
        if (self.kind == "guided") != (not self.entry):
            raise ValueError(f"method {self.name!r}: an entry 'module:function' is needed unless kind is 'guided'")

    @property
    def description(self) -> str:
        """Title, paper and note in one line, e.g. ``"FEM (Fuad et al. 2020), gradient-free"``."""
        text = self.title + (f" ({self.paper})" if self.paper else "")
        if self.note:
            text += f", {self.note}" if self.paper else f" ({self.note})"
        return text


def _cam(name: str, title: str, paper: str, entry: str, class_name: str, **more: Any) -> MethodRow:
    family = more.pop("family", "gradient CAM")
    return MethodRow(name, "cam", family, True, title, paper, f"camlens.methods.{entry}", class_name, **more)


def _context(
    name: str, family: str, title: str, paper: str, entry: str, class_name: str, uses_layer: bool = True, **more: Any
) -> MethodRow:
    head = more.pop("head", "")
    more["head"] = f"camlens.methods.{head}" if head else ""
    return MethodRow(name, "context", family, uses_layer, title, paper, f"camlens.methods.{entry}", class_name, **more)


_SCORE = {"perturbation": True, "any_layout": True}
ROWS: tuple[MethodRow, ...] = (
    # (A, g) weightings of the one capture
    _cam("gradcam", "Grad-CAM", "Selvaraju et al. 2017", "gradcam:gradcam", "GradCAM", seed=True),
    _cam("gradcam++", "Grad-CAM++", "Chattopadhay et al. 2018", "gradcam:gradcam_plus_plus", "GradCAMPlusPlus",
         seed=True),
    _cam("xgradcam", "XGrad-CAM", "Fu et al. 2020", "gradcam:xgradcam", "XGradCAM"),
    _cam("layercam", "LayerCAM", "Jiang et al. 2021", "gradcam:layercam", "LayerCAM", fuse="max"),
    _cam("hirescam", "HiResCAM", "Draelos & Carin 2020", "gradcam:hirescam", "HiResCAM"),
    _cam("gradcam_elementwise", "element-wise Grad-CAM", "", "gradcam:gradcam_elementwise", "GradCAMElementWise"),
    _cam("fem", "FEM", "Fuad et al. 2020", "activation:fem", "FEM", family="activation CAM", note="gradient-free"),
    _cam("eigencam", "Eigen-CAM", "Muhammad & Yeasin 2020", "activation:eigencam", "EigenCAM",
         family="activation CAM", eigen=True),
    _cam("eigengradcam", "Eigen-Grad-CAM", "", "activation:eigengradcam", "EigenGradCAM", eigen=True),
    _cam("kpcacam", "KPCA-CAM", "", "activation:kpcacam", "KPCACAM", family="activation CAM",
         note="kernel PCA of the activations", eigen=True),
    _cam("refinecam", "Refine-CAM", "Domeniconi et al. 2026", "refine:refinecam", "RefineCAM", fuse="product"),
    # functions of a MethodContext
    _context("fullgrad", "whole graph", "FullGrad", "Srinivas & Fleuret 2019", "fullgrad:fullgrad", "FullGrad",
             uses_layer=False, planar="its bias-gradient maps are post-processed in 2-D"),
    _context("cam", "classifier CAM", "CAM", "Zhou et al. 2016", "head:cam", "CAM", note="GAP + linear heads"),
    _context("finercam", "gradient CAM", "Finer-CAM", "Zhang et al. 2025", "head:finercam", "FinerCAM",
             head="head:finer_head", any_layout=True),
    _context("shapleycam", "gradient CAM", "ShapleyCAM", "Cai 2024", "head:shapleycam", "ShapleyCAM",
             head="head:shapley_head", any_layout=True),
    _context("legrad", "whole graph", "LeGrad", "Bousselham et al. 2024", "legrad:legrad", "LeGrad", uses_layer=False,
             note="vision transformers only", vit_only=True),
    _context("attention_rollout", "attention", "attention rollout", "Abnar & Zuidema 2020", "attention:rollout_of",
             "AttentionRollout", uses_layer=False, note="vision transformers only", vit_only=True),
    _context("generic_attention", "attention", "generic attention", "Chefer et al., ICCV 2021",
             "attention:generic_attention_of", "GenericAttention", uses_layer=False, note="vision transformers only",
             vit_only=True),
    _context("transformer_attribution", "attention LRP", "transformer attribution", "Chefer et al., CVPR 2021",
             "attention:transformer_attribution_of", "TransformerAttribution", uses_layer=False,
             note="vision transformers only", vit_only=True),
    _context("attnlrp", "attention LRP", "AttnLRP", "Achtibat et al. 2024", "attention:attnlrp_of", "AttnLRP",
             uses_layer=False, note="vision transformers only", vit_only=True),
    _context("ablationcam", "perturbation CAM", "Ablation-CAM", "Desai & Ramaswamy 2020", "score:ablationcam",
             "AblationCAM", **_SCORE),
    _context("scorecam", "perturbation CAM", "Score-CAM", "Wang et al. 2020", "score:scorecam", "ScoreCAM",
             **_SCORE),
    _context("sscam", "perturbation CAM", "SS-CAM", "", "score:sscam", "SSCAM", note="smoothed Score-CAM",
             **_SCORE),
    _context("iscam", "perturbation CAM", "IS-CAM", "", "score:iscam", "ISCAM", note="integrated Score-CAM",
             **_SCORE),
    _context("smoothgradcam++", "smoothed CAM", "Smooth Grad-CAM++", "Omeiza et al. 2019",
             "score:smooth_gradcam_plus_plus", "SmoothGradCAMPlusPlus", **_SCORE),
    _context("sess", "smoothed CAM", "SESS", "Tyagi et al. 2022", "sess:sess", "SESS", note="scales and windows",
             planar="its scales and sliding windows are 2-D", **_SCORE),
    # the guided-backprop input gradient, recorded by the engine in the same pass
    MethodRow("guided_backprop", "guided", "pixel gradient", False, "guided backprop", "Springenberg et al. 2015", "",
              "GuidedBackprop", fuse="first", seed=True),
    MethodRow("guided_gradcam", "guided", "pixel gradient x CAM", True, "Guided Grad-CAM", "Selvaraju et al. 2017",
              "", "GuidedGradCAM", seed=True),
)  # fmt: skip
ROW: dict[str, MethodRow] = {row.name: row for row in ROWS}


#: The method name that picks a method per architecture family (:mod:`camlens.auto`).
AUTO_METHOD = "auto"
#: ``auto``'s choice per architecture family: the method ``benchmarks/synthetic_meaning.py`` ranks best (the
#: highest mean share of maps peaking in the evidence over the training seeds) among the one-pass methods,
#: a tie going to Grad-CAM; families not measured take the nearest measured one's choice. The figures are
#: in ``docs/guide/attention.md`` (section "auto") and ``docs/evaluation/synthetic_meaning.md``.
AUTO_CHOICE: dict[str, str] = {
    "vit": "attention_rollout",  # class-token ViTs: measured on the tiny ViT (10 seeds)
    "vit_pooled": "attention_rollout",  # no class token (the mean row): not measured, the ViTs' choice
    "hybrid": "gradcam",  # Swin, PVT, MobileViT, CoAtNet (the attention methods refuse them): not measured
    "cnn": "gradcam",  # no attention: measured on the tiny CNN (5 seeds; the one-pass CAMs tie there)
}


def resolve(entry: str) -> Any:
    """The object an entry ``"package.module:name"`` names (its module imported now).

    >>> resolve("camlens.catalog:resolve") is resolve
    True
    """
    module, _, name = entry.partition(":")
    if not module or not name:
        raise ValueError(f"an entry is 'module:function', got {entry!r}")
    return getattr(importlib.import_module(module), name)


def markdown_table() -> str:
    """The methods table of ``docs/guide/methods.md`` (``camlens methods --markdown`` prints it)."""
    lines = ["| method | family | layer | what | class | function |", "|---|---|---|---|---|---|"]
    for row in ROWS:
        function = f"`{row.entry.replace(':', '.')}`" if row.entry else "`camlens.guided` (in the engine's capture)"
        lines.append(
            f"| {row.name} | {row.family} | {'yes' if row.uses_layer else 'no'} | {row.description} | "
            f"`{row.class_name}` | {function} |"
        )
    return "\n".join(lines) + "\n"


__all__ = ["AUTO_CHOICE", "AUTO_METHOD", "FUSIONS", "KINDS", "ROW", "ROWS", "MethodRow", "markdown_table", "resolve"]

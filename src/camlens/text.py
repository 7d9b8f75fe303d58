"""Explain vision-language and embedding models: which image regions make an image match a text or a reference.

* :func:`explain_text`: the score of (image ``i``, text ``t``) is the cosine of their embeddings, for
  open_clip models (``encode_image`` / ``encode_text``) and Hugging Face ``CLIPModel`` / ``SiglipModel``
  (``get_image_features`` / ``get_text_features``). The texts are embedded once, without gradients; the
  images run once through the image tower; the first text's similarity is differentiated by the engine's
  own backward, the other ``T - 1`` in one batched backward (``torch.autograd.grad(...,
  is_grads_batched=True)``), both through the part of the tower after the target layer only.
* :func:`explain_similarity`: the cosine between each image's embedding and a reference (an embedding, or
  an image through the same model): DINOv2, CLIP image towers, a classifier trunk whose output is the
  embedding. It is :func:`camlens.explain` with the cosine as the target.

The automatic target layer: an open_clip ResNet's ``visual.layer4`` (the map before the attention pool);
an open_clip ViT's or a Hugging Face CLIP tower's last block's first norm (the tokens entering the last
attention, class token dropped; after it only the class token reaches the embedding); SigLIP's
``post_layernorm`` (all tokens reach its attention-pooling head); otherwise the engine's rule
(:mod:`camlens.layers`). Layouts are read by :mod:`camlens.layouts`, the maps by the CAM functions of
:mod:`camlens.methods`.

Methods: every ``(A, g)`` CAM weighting (``gradcam``, ``gradcam++``, ``layercam`` ...), and

* ``gscorecam`` (Chen et al., ACCV 2022): Score-CAM on the ``topk`` (300) channels with the largest mean
  gradient, each masked image scored by the model's logit ``exp(logit_scale) * cosine``;
* ``gradeclip`` (Zhao et al., ICML 2024): see :func:`camlens.methods.clip.gradeclip`; ViT towers with a
  class token whose last block is an ``nn.MultiheadAttention`` (open_clip) or Hugging Face CLIP attention;
* ``legrad`` (:func:`camlens.methods.legrad.legrad`, on each prompt's cosine; one forward per prompt).

No module of the model is changed; hooks live for one call; the model is guarded as by ``explain``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camlens.engine import Capture, capture, check_input
from camlens.errors import check_names
from camlens.explanation import MethodMaps
from camlens.guard import guard
from camlens.layers import LayerSpec, default_layer, resolve_layer
from camlens.layouts import Layout, LayoutSpec, resolve_layout
from camlens.methods.clip import gradeclip, gscorecam_weights, top_gradient_channels
from camlens.methods.gradcam import weighted_sum
from camlens.methods.registry import CAM_METHODS
from camlens.postprocess import cam_to_image, normalize_per_image, resize

TEXT_METHODS = ("gscorecam", "gradeclip", "legrad")  # beside the CAM weightings
_TOWER = "model."  # the user's model inside the tower module


def available_text_methods() -> list[str]:
    """Every method name :func:`explain_text` accepts."""
    return [*CAM_METHODS, *TEXT_METHODS]


@dataclass(frozen=True)
class TextExplanation(MethodMaps):
    """The maps of one :func:`explain_text` call.

    ``maps[name]`` is ``(B, T, H, W)`` in [0, 1] (image ``i``, text ``t``); ``raw[name]`` the signed
    ``(B, T, u, v)`` layer map before the ReLU; ``similarity`` ``(B, T)`` the cosines explained.
    """

    maps: dict[str, Tensor]
    raw: dict[str, Tensor]
    similarity: Tensor
    target_layer: str | None
    texts: tuple[str, ...] | None = None
    layout: Layout | None = None


@dataclass(frozen=True)
class SimilarityExplanation(MethodMaps):
    """The maps of one :func:`explain_similarity` call: ``maps[name]`` ``(B, H, W)`` in [0, 1], ``raw[name]``
    ``(B, u, v)`` signed, ``similarity`` ``(B,)``; ``explanation`` is the underlying
    :class:`camlens.Explanation` (warnings, layout, capture)."""

    maps: dict[str, Tensor]
    raw: dict[str, Tensor]
    similarity: Tensor
    target_layer: str | None
    explanation: Any = None


# ---------------------------------------------------------------------------------------------- the tower


def is_image_text(model: nn.Module) -> bool:
    """Whether :func:`explain_text` can explain ``model``: an open_clip model (``encode_image`` /
    ``encode_text``) or a Hugging Face one with ``get_image_features``.

    Example:
        >>> import torch
        >>> is_image_text(torch.nn.Linear(2, 2))
        False
    """
    return _kind(model) != "plain"


def similarity_scale(model: nn.Module) -> float:
    """``exp(logit_scale)`` of a CLIP-like model: its logits over texts are this times the cosines (1 without one).

    Example:
        >>> import torch
        >>> similarity_scale(torch.nn.Linear(2, 2))
        1.0
    """
    return _scale(model)


def _kind(model: nn.Module) -> str:
    if callable(getattr(model, "encode_image", None)) and callable(getattr(model, "encode_text", None)):
        return "open_clip"
    if callable(getattr(model, "get_image_features", None)):
        return "hf"
    return "plain"


def embedding_of(output: Any) -> Tensor:
    """The ``(B, D)`` embedding in a tower's output: a tensor, or ``image_embeds`` / ``pooler_output``."""
    for value in (output, getattr(output, "image_embeds", None), getattr(output, "pooler_output", None)):
        if isinstance(value, Tensor):
            if value.dim() != 2:
                raise ValueError(
                    f"the model's embedding must be (batch, dim), got shape {tuple(value.shape)}: pass a model "
                    "whose output is one vector per image (a trunk without its classifier, an image tower)"
                )
            return value
    raise ValueError(
        f"cannot find an embedding in the model's output ({type(output).__name__}): expected a (batch, dim) "
        "tensor, or an output with image_embeds or pooler_output"
    )


class _Tower(nn.Module):
    """The image tower as a module ``x -> (B, D)`` embedding, holding the user's model (unchanged)."""

    def __init__(self, model: nn.Module, kind: str, prefix: int | None, patch: int | None) -> None:
        super().__init__()
        self.model: Any = model  # open_clip / Hugging Face models: their methods are not nn.Module's
        self.kind = kind
        if prefix is not None:
            self.num_prefix_tokens = prefix  # read by camlens.layouts and legrad
        if patch is not None:
            self.patch_size = patch

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "open_clip":
            return embedding_of(self.model.encode_image(x))
        if self.kind == "hf":
            return embedding_of(self.model.get_image_features(pixel_values=x))
        return embedding_of(self.model(x))


@dataclass(frozen=True)
class _Info:
    layer: str | None  # the automatic layer by architecture, None: the engine's rule
    prefix: int | None
    patch: int | None
    attention: str | None = None  # the last attention block (gradeclip)


def _int_patch(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, tuple | list) and len(value) == 2 and value[0] == value[1]:
        return int(value[0])
    return None


def _tower_info(model: nn.Module, kind: str) -> _Info:
    if kind == "open_clip":
        visual = getattr(model, "visual", None)
        blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
        if type(visual).__name__ == "ModifiedResNet":
            return _Info("visual.layer4", None, None)
        if blocks is not None and len(blocks):
            last = f"visual.transformer.resblocks.{len(blocks) - 1}"
            prefix = 1 if getattr(visual, "class_embedding", None) is not None else 0
            return _Info(f"{last}.ln_1", prefix, _int_patch(getattr(visual, "patch_size", None)), f"{last}.attn")
        return _Info(None, None, None)
    if kind == "hf":
        vision = getattr(model, "vision_model", None)
        layers = getattr(getattr(vision, "encoder", None), "layers", None)
        config = getattr(getattr(model, "config", None), "vision_config", None)
        patch = _int_patch(getattr(config, "patch_size", None))
        if layers is None or not len(layers):
            return _Info(None, None, patch)
        last = f"vision_model.encoder.layers.{len(layers) - 1}"
        if getattr(getattr(vision, "embeddings", None), "class_embedding", None) is not None:
            return _Info(f"{last}.layer_norm1", 1, patch, f"{last}.self_attn")
        if hasattr(vision, "post_layernorm"):  # SigLIP: every token reaches the pooling head
            return _Info("vision_model.post_layernorm", 0, patch)
        return _Info(None, 0, patch)
    config = getattr(model, "config", None)
    if "dinov2" in type(model).__name__.lower() and config is not None:
        prefix = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
        return _Info(None, prefix, _int_patch(getattr(config, "patch_size", None)))
    found = getattr(model, "num_prefix_tokens", None)
    patch = _int_patch(getattr(getattr(model, "patch_embed", None), "patch_size", None))
    return _Info(None, found if isinstance(found, int) else None, patch)


def _user_layer(model: nn.Module, tower: _Tower, x: Tensor, spec: LayerSpec, info: _Info) -> tuple[str, nn.Module]:
    """The target layer as ``(name in the user's model, module)``."""
    if spec is not None:
        return resolve_layer(model, spec)
    if info.layer is not None:
        return resolve_layer(model, info.layer)
    name, module = default_layer(tower, x[:1])  # the engine's rule (one extra pass)
    return name.removeprefix(_TOWER), module


def _scale(model: nn.Module) -> float:
    """``exp(logit_scale)`` of a CLIP-like model (its logits are this times the cosine), else 1."""
    scale = getattr(model, "logit_scale", None)
    return float(scale.detach().exp()) if isinstance(scale, Tensor) else 1.0


# ----------------------------------------------------------------------------------------------- the texts


def _tokens(model: nn.Module, kind: str, texts: Any, tokenizer: Any) -> tuple[Any, tuple[str, ...] | None]:
    """The token ids (a tensor, or the tokenizer's mapping) and the texts as given."""
    if isinstance(texts, Tensor) and texts.is_floating_point():  # text embeddings, computed by the caller
        if texts.dim() != 2 or not texts.shape[0]:
            raise ValueError(f"text embeddings must be a (T, dim) tensor, got shape {tuple(texts.shape)}")
        return texts, None
    if isinstance(texts, Tensor):
        if texts.dtype not in (torch.long, torch.int32, torch.int64) or texts.dim() != 2 or not texts.shape[0]:
            raise ValueError(f"token ids must be a (T, length) integer tensor, got {texts.dtype} {tuple(texts.shape)}")
        return texts.long(), None
    if isinstance(texts, str):
        texts = [texts]
    labels = tuple(texts) if isinstance(texts, Sequence) else ()
    if not labels:
        raise ValueError("texts is empty: pass one or more strings or a (T, length) tensor of token ids")
    if not all(isinstance(t, str) for t in labels):
        raise TypeError("texts must be strings or a (T, length) tensor of token ids")
    if tokenizer is not None:
        if hasattr(tokenizer, "model_input_names"):  # a Hugging Face tokenizer
            padding = "max_length" if "siglip" in type(model).__name__.lower() else True
            return tokenizer(list(labels), padding=padding, return_tensors="pt"), labels
        return tokenizer(list(labels)), labels
    if kind != "open_clip":
        raise ValueError(
            "strings need a tokenizer for this model: pass tokenizer= (e.g. transformers.AutoTokenizer for a "
            "Hugging Face model) or token ids"
        )
    try:
        import open_clip
    except ImportError as error:
        raise ImportError(
            "tokenizing texts for an open_clip model needs open_clip: pip install open_clip_torch"
        ) from error
    length = getattr(model, "context_length", 77)
    ids = open_clip.tokenize(list(labels), context_length=length)
    vocabulary = getattr(model, "vocab_size", None)
    if isinstance(vocabulary, int) and int(ids.max()) >= vocabulary:
        raise ValueError(
            f"open_clip's tokenizer gives token ids up to {int(ids.max())} but the model's vocabulary has "
            f"{vocabulary}: pass tokenizer= (the model's own) or token ids"
        )
    return ids, labels


def _text_embeddings(model: Any, kind: str, tokens: Any, device: torch.device) -> Tensor:
    """``(T, D)`` unit text embeddings, without gradients."""
    if isinstance(tokens, Tensor) and tokens.is_floating_point():
        return F.normalize(tokens.detach().float().to(device), dim=-1)
    with torch.inference_mode(False), torch.no_grad():
        if isinstance(tokens, Tensor):
            tokens = tokens.to(device)
            output = model.encode_text(tokens) if kind == "open_clip" else model.get_text_features(input_ids=tokens)
        else:
            fields = {k: v.to(device) for k, v in dict(tokens).items() if isinstance(v, Tensor)}
            if kind == "open_clip":
                output = model.encode_text(fields["input_ids"])
            else:
                output = model.get_text_features(**fields)
    if not isinstance(output, Tensor):
        output = getattr(output, "text_embeds", None) if hasattr(output, "text_embeds") else output.pooler_output
    return F.normalize(output.float(), dim=-1)


# ---------------------------------------------------------------------------------- attention (gradeclip)


class _AttentionRecorder:
    """Forward hooks on the last attention block keeping ``q``, ``k``, ``v`` and the tensor whose gradient
    gives the class token's attention output gradient (before the output projection)."""

    def __init__(self, model: nn.Module, info: _Info) -> None:
        if info.attention is None or not info.prefix:
            raise ValueError(
                "gradeclip needs a vision transformer with a class token (an open_clip ViT or a Hugging Face CLIP "
                "vision tower); this model has none"
            )
        self.module = dict(model.named_modules())[info.attention]
        self.kept: dict[str, Tensor] = {}
        self.handles: list[Any] = []

    def __enter__(self) -> _AttentionRecorder:
        module = self.module
        if isinstance(module, nn.MultiheadAttention):
            self.handles.append(module.register_forward_hook(self._multihead))
        elif all(hasattr(module, n) for n in ("q_proj", "k_proj", "v_proj", "out_proj")):
            for name in ("q_proj", "k_proj", "v_proj"):
                self.handles.append(getattr(module, name).register_forward_hook(self._keep(name[0])))
            self.handles.append(module.out_proj.register_forward_pre_hook(self._keep_input))
        else:
            raise ValueError(f"gradeclip does not know the attention module {type(module).__name__}")
        return self

    def __exit__(self, *_exc: object) -> None:
        for handle in self.handles:
            handle.remove()

    def _multihead(self, module: Any, inputs: Any, output: Any) -> None:
        x = inputs[0]
        if not getattr(module, "batch_first", False) or not module._qkv_same_embed_dim:
            raise ValueError("gradeclip needs a batch-first nn.MultiheadAttention with one input projection")
        q, k, v = F.linear(x.detach(), module.in_proj_weight, module.in_proj_bias).detach().chunk(3, dim=-1)
        self.kept.update(q=q, k=k, v=v, out=output[0])

    def _keep(self, key: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            self.kept[key] = output.detach()

        return hook

    def _keep_input(self, _module: nn.Module, inputs: Any) -> None:
        self.kept["o"] = inputs[0]

    def graph_tensor(self) -> Tensor:
        tensor = self.kept.get("out", self.kept.get("o"))
        if tensor is None or not tensor.requires_grad:
            raise ValueError(
                "gradeclip needs the last attention block after the target layer: pick a target layer at or "
                "before that block's input (target_layer=None does)"
            )
        return tensor

    def class_gradient(self, gradient: Tensor) -> Tensor:
        """``(..., C)`` ``dS/do`` at the class token, before the output projection."""
        cls = gradient[..., 0, :]
        if "out" in self.kept:  # out = o W^T + b
            return cls @ self.module.out_proj.weight.detach().to(cls.dtype)
        return cls


# ------------------------------------------------------------------------------------------------ explain


def _batched_gradients(outputs: Tensor, inputs: list[Tensor]) -> list[Tensor]:
    """``(T, *input.shape)`` gradients of each column of ``outputs`` ``(B, T)``, in one batched backward."""
    count = outputs.shape[1]
    seeds = torch.zeros(count, *outputs.shape, dtype=outputs.dtype, device=outputs.device)
    seeds[torch.arange(count), :, torch.arange(count)] = 1
    try:
        grads = torch.autograd.grad(outputs, inputs, grad_outputs=seeds, retain_graph=True, is_grads_batched=True)
    except RuntimeError:  # an operation without a batching rule: one backward per text
        each = [torch.autograd.grad(outputs, inputs, grad_outputs=s, retain_graph=True) for s in seeds]
        grads = tuple(torch.stack(parts) for parts in zip(*each, strict=True))
    return [g.detach() for g in grads]


def explain_text(
    model: nn.Module,
    images: Tensor,
    texts: Sequence[str] | str | Tensor,
    methods: Sequence[str] | str = ("gradcam",),
    tokenizer: Any = None,
    target_layer: LayerSpec = None,
    *,
    layout: LayoutSpec = None,
    topk: int = 300,
    batch_size: int = 32,
) -> TextExplanation:
    """Explain the cosine similarity of each image with each text, ``(B, T)`` maps per method.

    Args:
        model: an open_clip model (``encode_image``/``encode_text``) or a Hugging Face ``CLIPModel`` /
            ``SiglipModel``; left exactly as found.
        images: ``(B, C, H, W)``, preprocessed as the model expects.
        texts: strings (tokenized with ``tokenizer``, else open_clip's own tokenizer, which works offline),
            a ``(T, length)`` integer tensor of token ids, or a ``(T, D)`` float tensor of text embeddings
            already computed (a fixed label set reused across calls: the text tower does not run).
        methods: names from :func:`available_text_methods`.
        tokenizer: a callable ``list[str] -> ids`` or a Hugging Face tokenizer.
        target_layer: a module or dotted name in ``model``; None: the automatic layer (see the module doc).
        layout: the target layer's layout (see :mod:`camlens.layouts`), None to detect it.
        topk: gScoreCAM's number of channels.
        batch_size: gScoreCAM's masked images per forward.

    Example:
        >>> result = explain_text(clip_model, images, ["a dog", "a cat"], ["gradcam"])  # doctest: +SKIP
        >>> result["gradcam"].shape, result.similarity.shape                           # doctest: +SKIP
        (torch.Size([2, 2, 224, 224]), torch.Size([2, 2]))
    """
    check_input(model, images)
    names = check_names(methods, available_text_methods(), where=" for explain_text")
    if not isinstance(topk, int) or topk < 1:
        raise ValueError(f"topk must be a positive int, got {topk!r}")
    kind = _kind(model)
    if kind == "plain":
        raise ValueError(
            f"explain_text needs an image-text model (encode_image/encode_text or get_image_features/"
            f"get_text_features); {type(model).__name__} has neither: use explain_similarity for an image model"
        )
    tokens, labels = _tokens(model, kind, texts, tokenizer)
    size = (int(images.shape[-2]), int(images.shape[-1]))
    with guard(model) as guarded:
        eager = guarded.model
        info = _tower_info(eager, kind)
        tower = _Tower(eager, kind, info.prefix, info.patch)
        text = _text_embeddings(eager, kind, tokens, images.device)
        layer = _user_layer(eager, tower, images, target_layer, info)
        recorder = _AttentionRecorder(eager, info) if "gradeclip" in names else None

        def first(output: Tensor) -> Tensor:
            if output.shape[-1] != text.shape[-1]:
                raise ValueError(
                    f"the texts' embeddings have {text.shape[-1]} dimensions, the images' {output.shape[-1]}"
                )
            return (F.normalize(output, dim=-1) * text[0].to(output.dtype)).sum(-1)

        def head(output: Any, activations: Tensor, _picked: Any) -> dict[str, Tensor]:
            similarity = F.normalize(output, dim=-1) @ text.T.to(output.dtype)  # (B, T)
            extras = {"similarity": similarity.detach()}
            if recorder is not None:  # every text's gradient at the attention output, and at the layer
                grads = _batched_gradients(similarity, [activations, recorder.graph_tensor()])
                extras.update(gradients=grads[0][1:], attention=grads[1])
            elif similarity.shape[1] > 1:  # the engine's own backward gives the first text's
                extras["gradients"] = _batched_gradients(similarity[:, 1:], [activations])[0]
            return extras

        with recorder if recorder is not None else contextlib.nullcontext():
            cap = capture(tower, images, first, (_TOWER + layer[0], layer[1]), layout=layout, head=head)
        assert cap.layout is not None and cap.activations is not None
        similarity = cap.extras["similarity"]
        batch, count = similarity.shape
        assert cap.gradients is not None  # the first text's, (B, K, u, v)
        gradients = cap.gradients[:, None]
        if count > 1:  # the other texts', (T - 1, B, ...) in the layer's layout
            native = cap.extras["gradients"]
            others = cap.layout.to_spatial(native.flatten(0, 1)).unflatten(0, (count - 1, batch)).transpose(0, 1)
            gradients = torch.cat([gradients, others.to(gradients.dtype)], dim=1)
        activations = cap.activations
        raw: dict[str, Tensor] = {}
        every = activations[:, None].expand(-1, count, -1, -1, -1).flatten(0, 1)
        for name in names:
            if name in CAM_METHODS:
                raw[name] = CAM_METHODS[name](every, gradients.flatten(0, 1)).unflatten(0, (batch, count))
            elif name == "gscorecam":
                raw[name] = _gscorecam(tower, images, activations, gradients, text, _scale(eager), topk, batch_size)
            elif name == "gradeclip":
                assert recorder is not None
                raw[name] = _gradeclip(recorder, cap.extras["attention"], tower, size)
            else:
                raw[name] = _legrad(tower, images, text)
    maps = {n: cam_to_image(m.flatten(0, 1), size).unflatten(0, (batch, count)).to(m.dtype) for n, m in raw.items()}
    return TextExplanation(maps, raw, similarity, layer[0], labels, cap.layout)


def _gscorecam(
    tower: nn.Module, x: Tensor, activations: Tensor, gradients: Tensor, text: Tensor, scale: float, k: int, chunk: int
) -> Tensor:
    """gScoreCAM maps ``(B, T, u, v)``: per image, each chosen channel's masked image runs once and is scored
    against every text."""
    size = (int(x.shape[-2]), int(x.shape[-1]))
    batch, count, channels = gradients.shape[:3]
    out = []
    for b in range(batch):
        chosen = top_gradient_channels(gradients[b], k)  # (T, k)
        union, position = torch.unique(chosen, return_inverse=True)
        up = resize(activations[b, union], size)
        varies = (up.flatten(1).amax(1) > up.flatten(1).amin(1)).to(up.dtype)[:, None, None]
        masks = normalize_per_image(up) * varies  # (n, H, W) min-max to [0, 1]; a constant channel masks all out
        cosines = []
        with torch.inference_mode(False), torch.no_grad():
            for start in range(0, len(union), chunk):
                masked = x[b : b + 1].detach() * masks[start : start + chunk, None].to(x.dtype)
                cosines.append(F.normalize(tower(masked).float(), dim=-1) @ text.T)
        cosine = torch.cat(cosines)  # (n, T)
        scores = scale * cosine[position, torch.arange(count, device=cosine.device)[:, None]]  # (T, k)
        weights = gscorecam_weights(scores, chosen, channels).to(activations.dtype)
        out.append(weighted_sum(weights, activations[b].expand(count, -1, -1, -1)))
    return torch.stack(out)


def _gradeclip(
    recorder: _AttentionRecorder, attention_gradient: Tensor, tower: nn.Module, size: tuple[int, int]
) -> Tensor:
    """Grad-ECLIP maps ``(B, T, u, v)`` from the last attention block's ``q, k, v`` and the gradients."""
    q, k, v = recorder.kept["q"], recorder.kept["k"], recorder.kept["v"]
    layout = resolve_layout(tuple(v.shape), size, tower, None, "tokens")
    prefix, count = layout.prefix_tokens, attention_gradient.shape[0]
    weights = recorder.class_gradient(attention_gradient).transpose(0, 1).flatten(0, 1)  # (B*T, C)
    repeat = lambda t: t[:, None].expand(-1, count, *t.shape[1:]).flatten(0, 1)  # noqa: E731
    tokens = gradeclip(weights, repeat(q[:, 0]), repeat(k[:, prefix:]), repeat(v[:, prefix:]))  # (B*T, patches)
    return tokens.reshape(q.shape[0], count, *layout.grid)


def _legrad(tower: nn.Module, x: Tensor, text: Tensor) -> Tensor:
    """camlens's LeGrad on each text's cosine (one forward per text), ``(B, T, u, v)``."""
    from camlens.methods.context import MethodContext
    from camlens.methods.legrad import legrad

    maps = []
    for t in range(text.shape[0]):
        target = lambda out, t=t: (F.normalize(out, dim=-1) * text[t].to(out.dtype)).sum(-1)  # noqa: E731
        stub = Capture(None, None, torch.zeros(x.shape[0]), None, None, None, None, None)
        maps.append(legrad(MethodContext(tower, x, target, None, stub)))
    return torch.stack(maps, dim=1)


def explain_similarity(
    model: nn.Module,
    images: Tensor,
    reference: Tensor,
    methods: Sequence[str] | str = ("gradcam",),
    target_layer: LayerSpec = None,
    *,
    layout: LayoutSpec = None,
    **options: Any,
) -> SimilarityExplanation:
    """Explain the cosine between each image's embedding and ``reference``, ``(B, H, W)`` maps per method.

    Args:
        model: an embedding model: its output is ``(B, D)`` (a trunk without classifier), or has
            ``image_embeds`` / ``pooler_output`` (Hugging Face ``Dinov2Model``, ``CLIPVisionModelWithProjection``);
            an open_clip or Hugging Face CLIP model is explained through its image tower.
        images: ``(B, C, H, W)``.
        reference: an embedding ``(D,)``, one per image ``(B, D)``, or an image ``(1, C, H, W)`` / images
            ``(B, C, H, W)`` embedded by the same model (without gradients).
        methods: any :func:`camlens.explain` methods (the cosine is the target).
        target_layer: a module or dotted name in ``model``; None: automatic (see the module doc).
        **options: passed to :func:`camlens.explain` (``batch_size`` ...).
    """
    from camlens.explanation import explain

    check_input(model, images)
    if not isinstance(reference, Tensor) or reference.dim() not in (1, 2, 4):
        raise ValueError(
            "reference must be an embedding (D,) or (B, D), or images (1 or B, C, H, W), got "
            + (f"shape {tuple(reference.shape)}" if isinstance(reference, Tensor) else type(reference).__name__)
        )
    kind = _kind(model)
    with guard(model) as guarded:
        eager = guarded.model
        info = _tower_info(eager, kind)
        tower = _Tower(eager, kind, info.prefix, info.patch)
        if reference.dim() == 4:
            with torch.inference_mode(False), torch.no_grad():
                reference = tower(reference.to(images.device, images.dtype))
        target = F.normalize(reference.detach().float(), dim=-1)
        if target.dim() == 2 and target.shape[0] not in (1, images.shape[0]):
            raise ValueError(f"reference holds {target.shape[0]} embeddings for {images.shape[0]} images: pass 1 or B")

        def cosine(output: Tensor) -> Tensor:
            if output.shape[-1] != target.shape[-1]:
                raise ValueError(
                    f"the reference has {target.shape[-1]} dimensions, the model's embedding {output.shape[-1]}"
                )
            return (F.normalize(output, dim=-1) * target.to(output.dtype)).sum(-1)

        layer: Any = target_layer
        if target_layer is not None:
            layer = resolve_layer(eager, target_layer)[1]
        elif info.layer is not None:
            layer = resolve_layer(eager, info.layer)[1]
        result = explain(tower, images, methods, layer, cosine, layout=layout, **options)
    name = None if result.target_layer is None else result.target_layer.removeprefix(_TOWER)
    return SimilarityExplanation(dict(result.maps), dict(result.raw), result.scores, name, result)


__all__ = [
    "TEXT_METHODS",
    "SimilarityExplanation",
    "TextExplanation",
    "available_text_methods",
    "embedding_of",
    "explain_similarity",
    "explain_text",
    "is_image_text",
    "similarity_scale",
]

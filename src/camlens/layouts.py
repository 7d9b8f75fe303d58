"""Layer output layouts: channels-first maps, channels-last maps and tokens, all seen as ``(B, K, u, v)``
(``(B, K, t, u, v)`` for a clip or volume input ``(B, C, T, H, W)``).

A target layer may output

* ``nchw``: a channels-first map ``(B, C, H, W)`` (convolutional networks), ``(B, C, T, H, W)`` for a clip or
  volume (3-D convolutional networks: torchvision's r3d_18, mc3_18, r2plus1d_18, s3d);
* ``nhwc``: a channels-last map ``(B, H, W, C)`` (Swin and MaxViT stages, ConvNeXt block internals),
  ``(B, T, H, W, C)`` for a clip (Video Swin, torchvision's swin3d_t);
* ``tokens``: ``(B, N, C)``, patch tokens after any prefix tokens (class, distillation, register tokens).
  The prefix tokens are dropped and the patch tokens laid out row by row on the patch grid; on a clip, frame
  by frame on the ``(t, u, v)`` grid the model itself passes along with its tokens (see :class:`TokenGrids`).

:func:`resolve_layout` decides which, from the tensor's shape, the input's size and what the model says
(timm's ``num_prefix_tokens`` and ``patch_embed.grid_size``, torchvision ViT's ``class_token``).
:meth:`Layout.to_spatial` turns the activations and, identically, their gradients into ``(B, K, u, v)``,
so every CAM function is unchanged. The conversion is a view (a slice, a reshape and a permute).

How the shape is read: a spatial grid ``(u, v)`` is plausible for an ``H x W`` input when it fits inside
it and both axes have about the same stride (``H/u`` and ``W/v`` within a factor 1.5). A 4-D output
is ``nchw`` when only its last two axes form a plausible grid, ``nhwc`` when only its middle two do;
when both do (e.g. ``(B, 7, 7, 7)``), the module decides (a convolution or 2-d norm: ``nchw``; a
``LayerNorm`` or ``Linear`` over the last axis: ``nhwc``); otherwise channels-first is assumed and the
layout says so (``Layout.assumed``; ``explain`` records a warning naming ``layout=``). For a clip or volume
input ``(T, H, W)`` a 5-D output is read the same way on its spatial axes, with its time axis at most ``T``
long (the temporal stride of a video network often differs from its spatial one). A clip's tokens are not read
from their count (8 x 7 x 7 and 2 x 14 x 14 patches are both plausible for 16 x 224 x 224): their grid is the
``(t, h, w)`` the model hands on with them, as torchvision's MViT blocks do (``block(x, thw) -> (x, thw)``),
seen by :class:`TokenGrids` during the forward pass. Tokens that lay out on no grid are an error that says how
to state the layout. Tokens take the prefix count from the
model, else the count (0 to 8) whose grid best fits the input's aspect (on a tie, the smallest).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

LAYOUTS = ("nchw", "nhwc", "tokens")
LayoutSpec = None | str | Callable[[Tensor], Tensor]

_MAX_STRIDE_RATIO = 1.5
_MAX_GUESSED_PREFIX = 8


class LayoutError(ValueError):
    """The layout of a layer's output cannot be decided; the message says how to state it."""


@dataclass(frozen=True)
class Layout:
    """How a layer's output was read as ``(B, K, u, v)`` (``(B, K, t, u, v)`` for a clip or volume).

    Attributes:
        kind: ``"nchw"``, ``"nhwc"``, ``"tokens"`` or ``"custom"`` (a user callable).
        grid: the spatial grid ``(u, v)``, ``(t, u, v)`` for a clip or volume.
        prefix_tokens: the number of leading tokens dropped (tokens only).
        shape: the layer's own output shape.
        reshape: the user's callable for ``"custom"``.
        assumed: the shape read both ways and nothing told them apart: channels-first was assumed
            (``explain`` records a warning saying how to state it).

    Example:
        >>> import torch
        >>> layout = Layout("tokens", (2, 3), prefix_tokens=1, shape=(1, 7, 4))
        >>> layout.to_spatial(torch.zeros(1, 7, 4)).shape
        torch.Size([1, 4, 2, 3])
        >>> layout.describe()
        'tokens (1, 7, 4): 1 prefix token dropped, 2 x 3 grid'
    """

    kind: str
    grid: tuple[int, ...]
    prefix_tokens: int = 0
    shape: tuple[int, ...] = ()
    reshape: Callable[[Tensor], Tensor] | None = field(default=None, compare=False, repr=False)
    assumed: bool = False

    def to_spatial(self, t: Tensor) -> Tensor:
        """The layer output (or its gradient) as ``(B, K, u, v)`` (``(B, K, t, u, v)``); a view where possible."""
        if self.kind == "nchw":
            return t
        if self.kind == "nhwc":
            return t.movedim(-1, 1)
        if self.kind == "tokens":
            return t[:, self.prefix_tokens :, :].reshape(t.shape[0], *self.grid, t.shape[-1]).movedim(-1, 1)
        assert self.reshape is not None
        return self.reshape(t)

    def to_native(self, spatial: Tensor, native: Tensor) -> Tensor:
        """The inverse of :meth:`to_spatial`: ``spatial`` ``(n, K, u, v)`` in the layer's own layout.

        ``native`` is an output of the layer ``(1, ...)`` or ``(n, ...)``: its prefix tokens are kept.
        A user's reshape callable has no known inverse (a ValueError).
        """
        if self.kind == "nchw":
            return spatial
        if self.kind == "nhwc":
            return spatial.movedim(1, -1)
        if self.kind == "tokens":
            n, channels = spatial.shape[:2]
            patches = spatial.movedim(1, -1).reshape(n, -1, channels)
            prefix = native[:, : self.prefix_tokens, :].expand(n, -1, -1).to(patches.dtype)
            return torch.cat([prefix, patches], dim=1)
        raise ValueError("a layer read through a reshape callable cannot be written back: pick the layer's layout")

    def describe(self) -> str:
        """One line for people: ``"tokens (1, 197, 384): 1 prefix token dropped, 14 x 14 grid"``."""
        shape = tuple(self.shape)
        text = f"{self.kind} {shape}"
        if self.kind == "tokens":
            s = "" if self.prefix_tokens == 1 else "s"
            text += f": {self.prefix_tokens} prefix token{s} dropped,"
        else:
            text += ":"
        text = f"{text} {' x '.join(str(g) for g in self.grid)} grid"
        return text + (" (assumed channels-first: the shape reads both ways)" if self.assumed else "")


def _stride_mismatch(grid: tuple[int, int], size: tuple[int, int]) -> float:
    """``|log((H/u) / (W/v))|``, infinite when the grid does not fit inside the input."""
    (u, v), (h, w) = grid, size
    if u < 1 or v < 1 or u > h or v > w:
        return math.inf
    return abs(math.log((h / u) / (w / v)))


def _plausible(grid: tuple[int, int], size: tuple[int, int]) -> bool:
    return _stride_mismatch(grid, size) <= math.log(_MAX_STRIDE_RATIO) + 1e-9


def grid_for(count: int, size: tuple[int, int]) -> tuple[int, int] | None:
    """The plausible grid ``(u, v)`` with ``u * v == count`` closest to the input's aspect, or None.

    Example:
        >>> grid_for(24, (64, 96)), grid_for(50, (64, 64))
        ((4, 6), None)
    """
    best: tuple[float, tuple[int, int]] | None = None
    for u in range(1, count + 1):
        if count % u:
            continue
        grid = (u, count // u)
        score = _stride_mismatch(grid, size)
        if _plausible(grid, size) and (best is None or score < best[0]):
            best = (score, grid)
    return None if best is None else best[1]


def model_prefix_tokens(model: nn.Module) -> int | None:
    """Prefix tokens the model declares: timm's ``num_prefix_tokens``, torchvision ViT's and MViT's class
    token."""
    count = getattr(model, "num_prefix_tokens", None)
    if isinstance(count, int) and not isinstance(count, bool):
        return count
    if isinstance(getattr(model, "class_token", None), Tensor):
        return 1
    if isinstance(getattr(getattr(model, "pos_encoding", None), "class_token", None), Tensor):
        return 1  # torchvision MViT
    return None


def _grid_of(value: Any) -> tuple[int, int, int] | None:
    """``(t, h, w)`` when ``value`` is a sequence of three positive ints (not bools), else None."""
    if isinstance(value, tuple | list) and len(value) == 3:
        if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
            return int(value[0]), int(value[1]), int(value[2])
    return None


class TokenGrids:
    """The ``(t, h, w)`` grids a video transformer passes along with its tokens, seen during one forward pass.

    A context manager: while open it keeps a forward hook on every submodule of ``model`` (all removed on exit,
    also when the forward raises) that looks at each call's inputs and output for a token tensor ``(B, N, C)``
    next to three ints ``(t, h, w)``, the form of torchvision's MViT blocks and pools (``(x, thw)``).
    :attr:`grids` maps a patch count ``t * h * w`` to its grid; a count seen with two different grids maps to
    None (undecidable, so not used).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> class Block(nn.Module):
        ...     def forward(self, x, thw):
        ...         return x, thw
        >>> block = Block()
        >>> with TokenGrids(block) as seen:
        ...     _ = block(torch.zeros(1, 1 + 2 * 3 * 4, 8), (2, 3, 4))
        >>> seen.grids, len(block._forward_hooks)
        ({24: (2, 3, 4)}, 0)
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.grids: dict[int, tuple[int, int, int] | None] = {}
        self._handles: list[Any] = []

    def _see(self, values: Any) -> None:
        if not isinstance(values, tuple | list) or len(values) < 2:
            return
        if not any(isinstance(v, Tensor) and v.dim() == 3 for v in values):
            return
        for value in values:
            grid = _grid_of(value)
            if grid is not None:
                count = grid[0] * grid[1] * grid[2]
                if self.grids.setdefault(count, grid) != grid:
                    self.grids[count] = None

    def _hook(self, _module: nn.Module, inputs: Any, output: Any) -> None:
        self._see(inputs)
        self._see(output)

    def __enter__(self) -> TokenGrids:
        try:
            for module in self.model.modules():
                self._handles.append(module.register_forward_hook(self._hook))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self._remove()

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def model_grid(model: nn.Module, size: tuple[int, int]) -> tuple[int, int] | None:
    """The patch grid the model declares for an input of ``size``, if any."""
    patch_embed = getattr(model, "patch_embed", None)
    patch = getattr(patch_embed, "patch_size", None)
    if patch is None and isinstance(getattr(model, "patch_size", None), int):
        patch = model.patch_size  # torchvision VisionTransformer
    if isinstance(patch, int):
        patch = (patch, patch)
    if isinstance(patch, tuple | list) and len(patch) == 2 and all(isinstance(p, int) and p > 0 for p in patch):
        return size[0] // patch[0], size[1] // patch[1]
    grid = getattr(patch_embed, "grid_size", None)
    if isinstance(grid, tuple | list) and len(grid) == 2:
        return int(grid[0]), int(grid[1])
    return None


def _module_hint(module: nn.Module | None, channels_last: int, channels_first: int) -> str | None:
    """What the module's type says about its output's layout (None: nothing)."""
    if module is None:
        return None
    name = type(module).__name__.lower()
    if isinstance(module, nn.modules.conv._ConvNd | nn.modules.batchnorm._BatchNorm) or "2d" in name or "3d" in name:
        return "nchw"
    if isinstance(module, nn.LayerNorm) and tuple(module.normalized_shape) == (channels_last,):
        return "nhwc"
    if isinstance(module, nn.Linear) and module.out_features == channels_last:
        return "nhwc"
    if isinstance(module, nn.GroupNorm) and module.num_channels == channels_first:
        return "nchw"
    return None


def _prefix_counts(declared: int | None) -> list[int]:
    """The prefix-token counts to try, in order: the model's declared count then none, else 0 to 8."""
    return list(dict.fromkeys([declared, 0])) if declared is not None else list(range(_MAX_GUESSED_PREFIX + 1))


def _tokens(shape: tuple[int, ...], size: tuple[int, int], model: nn.Module | None) -> Layout | None:
    count = shape[1]
    declared = model_prefix_tokens(model) if model is not None else None
    grid_hint = model_grid(model, size) if model is not None else None
    best: tuple[float, Layout] | None = None
    for prefix in _prefix_counts(declared):
        rest = count - prefix
        if rest < 1:
            continue
        if grid_hint is not None and grid_hint[0] * grid_hint[1] == rest:
            return Layout("tokens", grid_hint, prefix, shape)
        grid = grid_for(rest, size)
        if grid is not None:
            if declared is not None:
                return Layout("tokens", grid, prefix, shape)
            score = _stride_mismatch(grid, size)
            if best is None or score < best[0] - 1e-9:  # the best-fitting grid; on a tie the fewest prefix tokens
                best = (score, Layout("tokens", grid, prefix, shape))
    return None if best is None else best[1]


def _how_to_state(shape: tuple[int, ...]) -> str:
    return (
        f"state it with layout='nchw' (B, C, H, W), 'nhwc' (B, H, W, C), 'tokens' (B, N, C) or a callable "
        f"returning (B, K, u, v) for the layer output of shape {shape} (camlens explain: --layout)"
    )


def resolve_layout(
    shape: tuple[int, ...],
    size: tuple[int, ...],
    model: nn.Module | None = None,
    module: nn.Module | None = None,
    spec: LayoutSpec = None,
    token_grids: Mapping[int, tuple[int, int, int] | None] | None = None,
) -> Layout:
    """Decide how a layer output of ``shape`` (for an input of ``size = (H, W)``) is laid out.

    Args:
        shape: the layer output's shape, 3-D or 4-D (5-D for a clip or volume).
        size: the input's spatial size ``(H, W)``, or ``(T, H, W)`` for a clip or volume ``(B, C, T, H, W)``.
        model: the whole model (prefix tokens, patch grid), optional.
        module: the layer (a type hint when a 4-D shape reads both ways), optional.
        spec: None (automatic), ``"nchw"``, ``"nhwc"``, ``"tokens"``, or a callable ``t -> (B, K, u, v)``.
        token_grids: for a clip's tokens, the ``(t, h, w)`` grids by patch count that the forward pass
            handed on (:attr:`TokenGrids.grids`).

    Raises:
        LayoutError: the layout is undecidable or does not fit the shape; the message says how to state it.

    Example:
        >>> resolve_layout((2, 7, 7, 768), (224, 224)).kind, resolve_layout((2, 768, 7, 7), (224, 224)).kind
        ('nhwc', 'nchw')
        >>> resolve_layout((2, 197, 384), (224, 224)).describe()
        'tokens (2, 197, 384): 1 prefix token dropped, 14 x 14 grid'
    """
    shape = tuple(int(s) for s in shape)
    if callable(spec):
        return Layout("custom", (0, 0), 0, shape, reshape=spec)
    if spec is not None and spec not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, a callable or None, not {spec!r}")
    if len(size) == 3:
        volume = (int(size[0]), int(size[1]), int(size[2]))
        if len(shape) == 3 and spec in (None, "tokens"):
            return _volume_tokens(shape, volume, model, token_grids or {})
        return _volume_layout(shape, volume, module, spec)
    size = (int(size[0]), int(size[1]))
    if len(shape) == 3:
        if spec not in (None, "tokens"):
            raise LayoutError(f"layout={spec!r} needs a 4-D layer output, got {shape}; {_how_to_state(shape)}")
        found = _tokens(shape, size, model)
        if found is None:
            raise LayoutError(
                f"cannot lay {shape[1]} tokens out on a grid for a {size[0]} x {size[1]} input: " + _how_to_state(shape)
            )
        return found
    if len(shape) != 4:
        raise LayoutError(
            f"a layer output of shape {shape} has no spatial layout (CAM methods need a map or tokens): "
            "pick a layer before the global pooling"
        )
    first, last = (shape[2], shape[3]), (shape[1], shape[2])
    if spec == "nchw":
        return Layout("nchw", first, 0, shape)
    if spec == "nhwc":
        return Layout("nhwc", last, 0, shape)
    if spec == "tokens":
        raise LayoutError(f"layout='tokens' needs a 3-D layer output, got {shape}; {_how_to_state(shape)}")
    as_first, as_last = _plausible(first, size), _plausible(last, size)
    if as_first and as_last:
        hint = _module_hint(module, shape[3], shape[1])
        if hint is None:  # the torch convention, said on the result (Layout.assumed)
            return Layout("nchw", first, 0, shape, assumed=True)
        return Layout(hint, first if hint == "nchw" else last, 0, shape)
    if as_last:
        return Layout("nhwc", last, 0, shape)
    return Layout("nchw", first, 0, shape)  # also a grid that fits neither reading: the torch default


def _volume_tokens(
    shape: tuple[int, ...],
    size: tuple[int, int, int],
    model: nn.Module | None,
    token_grids: Mapping[int, tuple[int, int, int] | None],
) -> Layout:
    """A clip's tokens ``(B, N, C)``: after the prefix tokens, ``t x h x w`` patches on a grid the forward
    pass handed on with them (the patch count alone is ambiguous on a clip)."""
    count = shape[1]
    for prefix in _prefix_counts(model_prefix_tokens(model) if model is not None else None):
        grid = token_grids.get(count - prefix)
        if grid is not None and grid[0] <= size[0] and grid[1] <= size[1] and grid[2] <= size[2]:
            return Layout("tokens", grid, prefix, shape)
    raise LayoutError(
        f"cannot lay {count} tokens out on a (t, h, w) grid for a {size[0]} x {size[1]} x {size[2]} clip: the model "
        "passes no (tokens, (t, h, w)) pair with them (as torchvision's MViT blocks do); state the layout with a "
        f"callable returning (B, K, t, u, v) for the layer output of shape {shape} (explain(layout=...))"
    )


def _volume_layout(
    shape: tuple[int, ...], size: tuple[int, int, int], module: nn.Module | None, spec: LayoutSpec
) -> Layout:
    """A clip's or volume's layer output ``(B, C, t, u, v)`` or ``(B, t, u, v, C)`` for an input of ``size``
    ``(T, H, W)``: the 4-D rule on the spatial axes, with the time axis at most ``T`` long."""
    if len(shape) != 5:
        raise LayoutError(
            f"on a clip or volume input (B, C, T, H, W) the target layer must output a 5-D map (B, C, T, H, W) "
            f"or (B, T, H, W, C), got {shape}: pick a layer before the global pooling"
            + (" (layout='tokens' reads a clip's tokens)" if len(shape) == 3 else "")
        )
    first, last = shape[2:], shape[1:4]
    if spec == "nchw":
        return Layout("nchw", first, 0, shape)
    if spec == "nhwc":
        return Layout("nhwc", last, 0, shape)
    if spec == "tokens":
        raise LayoutError(f"layout='tokens' needs a 3-D layer output, got {shape}; {_how_to_state(shape)}")
    as_first = first[0] <= size[0] and _plausible(first[1:], size[1:])
    as_last = last[0] <= size[0] and _plausible(last[1:], size[1:])
    if as_first and as_last:
        hint = _module_hint(module, shape[4], shape[1])
        if hint is None:
            return Layout("nchw", first, 0, shape, assumed=True)
        return Layout(hint, first if hint == "nchw" else last, 0, shape)
    if as_last:
        return Layout("nhwc", last, 0, shape)
    return Layout("nchw", first, 0, shape)

"""open_clip architectures by name (``open_clip:ViT-B-32``), built from open_clip's configs, never downloaded.

The weights come from ``weight_path`` (an open_clip checkpoint or state dict) or are random
(``random_weights``, for structure checks). The tokenizer is open_clip's own for the architecture (the
byte-pair tokenizer ships with open_clip and works offline); the input size and normalisation are the
architecture's preprocessing configuration.
"""

from __future__ import annotations

from camlens.errors import UnknownName, UsageError, closest_names
from camlens.zoo.network import Network

PREFIX = "open_clip:"


def knows_open_clip(name: str) -> str | None:
    return name if name.startswith(PREFIX) else None


def load_open_clip(name: str, weight_path: str | None, offline: bool, random_weights: bool) -> Network:
    """open_clip's architecture ``open_clip:<arch>`` with its tokenizer (``pip install open_clip_torch``)."""
    try:
        import open_clip
    except ImportError:
        raise UsageError(f"{name} needs open_clip: pip install open_clip_torch (or camlens[text])") from None
    from camlens.zoo.names import RANDOM
    from camlens.zoo.weights import fit_state_dict, read_state_dict

    arch = name.removeprefix(PREFIX)
    known = open_clip.list_models()
    if arch not in known:
        raise UnknownName(
            f"unknown open_clip architecture {arch!r}; closest: {', '.join(closest_names(arch, known, 4))}"
        )
    if weight_path is None and not random_weights:
        raise UsageError(
            f"no weights for {name} (nothing is downloaded for it): pass --weight-path FILE (an open_clip "
            "checkpoint), or --random-weights for a structure check"
        )
    try:
        model = open_clip.create_model(arch, pretrained=None)
        tokenizer = open_clip.get_tokenizer(arch)
    except Exception as error:  # noqa: BLE001 - e.g. a Hugging Face text tower that would need a download
        raise UsageError(f"{name} cannot be built offline: {type(error).__name__}: {str(error)[:200]}") from None
    source = RANDOM
    if weight_path is not None:
        state = read_state_dict(weight_path)
        fit_state_dict(model, state, weight_path, name)
        source = weight_path
    visual = model.visual
    size = getattr(visual, "image_size", 224)
    side = tuple(size) if isinstance(size, list | tuple) else (int(size), int(size))
    mean = tuple(getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = tuple(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    return Network(name, model.eval(), side, mean, std, [], source, tokenizer=tokenizer)

"""explain_text's cost for 8 prompts against 1 prompt (and against one plain image forward), side by side.

All prompts share one image forward; the text tower runs once without gradients, and the prompts'
cosines are differentiated in one batched backward through the tower after the target layer, so with
the texts' embeddings given, 8 prompts should cost little more than 1. From strings, each prompt also
runs the text tower once (no gradients), which at CLIP's 77-token context costs about an image forward.
Random-weight open_clip models built from their configs (no weights are downloaded): ViT-B-32 and RN50
at 224 px.

    python benchmarks/text_speed.py                       # ViT-B-32 and RN50, batch 1, best of 5 interleaved rounds
    python benchmarks/text_speed.py --models ViT-B-32 --rounds 3 --methods gradcam gradeclip
"""

from __future__ import annotations

import argparse
import time

import torch

from camlens.text import explain_text

PROMPTS = [
    "a photo of a dog", "a photo of a cat", "a red car", "a tree", "two people", "a bird in the sky",
    "a plate of food", "a city street",
]  # fmt: skip


def seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def measure(model: torch.nn.Module, x: torch.Tensor, methods: list[str], rounds: int) -> dict[str, float]:
    """Best seconds of a plain image forward and of explain_text with 1 and 8 prompts (strings, embeddings)."""

    def forward() -> None:
        with torch.no_grad():
            model.encode_image(x)

    import open_clip

    with torch.no_grad():
        embeddings = model.encode_text(open_clip.tokenize(PROMPTS))
    calls = {
        "forward": forward,
        "one": lambda: explain_text(model, x, PROMPTS[:1], methods),
        "eight": lambda: explain_text(model, x, PROMPTS, methods),
        "one_embedded": lambda: explain_text(model, x, embeddings[:1], methods),
        "eight_embedded": lambda: explain_text(model, x, embeddings, methods),
    }
    for call in calls.values():  # warm-up (the tokenizer loads on first use)
        call()
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(rounds):  # interleaved, best of each: robust to other load on the machine
        for key, call in calls.items():
            best[key] = min(best[key], seconds(call))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["ViT-B-32", "RN50"])
    parser.add_argument("--methods", nargs="+", default=["gradcam"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    import open_clip

    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"batch {args.batch}, 224 px, methods {' '.join(args.methods)}, {torch.get_num_threads()} threads")
    print("strings: the text tower runs for every prompt; embedded: the texts' embeddings are given (fixed labels)")
    head = ["forward", "1 str", "8 str", "8/1 str", "1 emb", "8 emb", "8/1 emb", "1 emb/fwd"]
    print(f"{'model':<10s}" + "".join(f"{h:>10s}" for h in head))
    for name in args.models:
        torch.manual_seed(0)
        model = open_clip.create_model(name, pretrained=None).eval()
        size = model.visual.image_size
        size = size[0] if isinstance(size, tuple | list) else size
        best = measure(model, torch.rand(args.batch, 3, size, size), args.methods, args.rounds)
        row = [best["forward"], best["one"], best["eight"], best["eight"] / best["one"], best["one_embedded"],
               best["eight_embedded"], best["eight_embedded"] / best["one_embedded"],
               best["one_embedded"] / best["forward"]]  # fmt: skip
        cells = [f"{v:>10.3f}" if i in (0, 1, 2, 4, 5) else f"{v:>10.2f}" for i, v in enumerate(row)]
        print(f"{name:<10s}" + "".join(cells))


if __name__ == "__main__":
    main()

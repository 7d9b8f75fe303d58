"""``camlens serve`` latency on the CPU, side by side with plain inference and one ``explain``, in one run.

    python benchmarks/serve_latency.py            # 7 rounds
    python benchmarks/serve_latency.py --rounds 3

Contenders, each timed once per round in turn (round-robin, medians; ratios are the headline since the
machine is shared), all in this thread: a plain forward of the bundled EfficientNet-Lite0 on
``examples/cat.jpg``; one ``camlens.explain`` of the predicted class with the four seed methods, and of
the top-5 classes as one batch of five copies (what the server runs per upload); the work of one
``POST /api/explain`` in the server's engine (decode, top-5 forward, the batched explain, the first
class's PNGs, JSON; HTTP on localhost adds milliseconds); and switching to another class of a kept run
(PNG encoding only, no model run).
The browser's upload-to-first-overlay time is printed by ``tests/integration/test_serve_browser.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import camlens
from camlens.images import read_image, to_batch

sys.path.insert(0, str(Path(__file__).parent))
from run import round_robin  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    import json

    from camlens.serve.explorer import Explorer

    explorer = Explorer(networks=[])
    network = explorer.network(None)
    data = (ROOT / "examples" / "cat.jpg").read_bytes()
    x = to_batch([read_image(ROOT / "examples" / "cat.jpg")], network.input_size, network.mean, network.std)
    last: dict[str, str] = {}

    def inference() -> None:
        with torch.no_grad():
            network.model(x)

    def explain() -> None:
        camlens.explain(network.model, x)

    with torch.no_grad():
        top5 = network.model(x).topk(5).indices[0].tolist()

    def explain_top5() -> None:
        camlens.explain(network.model, x.expand(5, -1, -1, -1), targets=top5)

    def upload() -> None:
        run = explorer.explain(explorer.add_upload(data, "cat.jpg"))
        json.dumps(explorer.describe(run))
        last["run"] = run.id

    def other_class() -> None:
        run = explorer.run(last["run"])
        run.encoded.clear()  # as on a first click
        json.dumps(explorer.class_maps(run, run.classes[1]))

    upload()
    medians = round_robin(
        {
            "plain inference (1 forward)": inference,
            "camlens.explain, 1 class, 4 methods": explain,
            "camlens.explain, 5 classes batched, 4 methods": explain_top5,
            "upload: decode, top-5 maps, first PNGs, JSON": upload,
            "another class from the kept run": other_class,
        },
        args.rounds,
    )
    base = medians["plain inference (1 forward)"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds (medians)")
    for name, seconds in medians.items():
        print(f"  {name:<50s} {seconds * 1000:8.1f} ms   {seconds / base:6.1f} x inference")
    ratio = medians["upload: decode, top-5 maps, first PNGs, JSON"] / medians["camlens.explain, 1 class, 4 methods"]
    print(f"  upload / one explain: {ratio:.2f}")


if __name__ == "__main__":
    main()

"""D-RISE on YOLOv8n against the same number of plain forwards (with ultralytics' own NMS), alone in one run.

``detection_speed.py`` times D-RISE among six other contenders (Grad-CAM, the per-box loop, EigenCAM ...); this
script alternates only the two, ``--rounds`` times (the first round a warm-up), and prints the ratio of the
medians and the median of the per-round ratios:

    PYTHONPATH=src python benchmarks/drise_speed.py --size 320 --masks 64
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import detection_speed as ds  # benchmarks/detection_speed.py, beside this script
import torch

from camlens.detection import explain_detections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--masks", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    model = ds.detectors(args.size)["YOLOv8n"]
    image = torch.rand(3, args.size * 3 // 4, args.size, generator=torch.Generator().manual_seed(0))

    def drise() -> None:
        explain_detections(
            model, [image], ["drise"], score_threshold=0.0, max_detections=32, masks=args.masks,
            batch_size=args.batch,
        )  # fmt: skip

    def forwards() -> None:  # the masks' forwards and the one that finds the boxes, each followed by NMS
        ds.plain_forwards(model, image, args.masks, args.batch)
        ds.plain_forwards(model, image, 1, 1)

    times: dict[str, list[float]] = {"drise": [], "forwards": []}
    for _ in range(args.rounds):
        for key, run in (("drise", drise), ("forwards", forwards)):
            start = time.perf_counter()
            run()
            times[key].append(time.perf_counter() - start)
    med = {key: statistics.median(values[1:]) for key, values in times.items()}
    pairs = statistics.median(a / b for a, b in zip(times["drise"][1:], times["forwards"][1:], strict=True))
    print(
        f"YOLOv8n {args.size} px, {args.masks} masks in batches of {args.batch}, {args.threads} threads: D-RISE "
        f"{med['drise']:.3f} s, forwards {med['forwards']:.3f} s, ratio {med['drise'] / med['forwards']:.3f} "
        f"(median of rounds {pairs:.3f})"
    )


if __name__ == "__main__":
    main()

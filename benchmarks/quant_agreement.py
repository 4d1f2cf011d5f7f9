"""Agreement of the CPU quantised plans with bf16 on the tiny demo model and the ``cxr-labelled`` set.

    python benchmarks/quant_agreement.py [--data ../shared/data/cxr-labelled] [--json out.json]

The demo model's files (random weights) are loaded once per plan (bf16, int8, int4) with the
prepared-weights cache in a temporary folder; every image of ``labels.csv`` is cropped once and run
through each plan. Printed per quantised plan: max and median |delta p| against bf16, and whether
the labels are identical at the app's threshold (0.5) and at the bf16 median threshold (images
within 1e-3 of that threshold counted apart: the demo model's probabilities all lie within ~0.06).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cxr-labelled"


def measure(data: Path) -> dict:
    import numpy as np

    from pneumoview.inference.demo import ensure_demo_model
    from pneumoview.inference.engine import InferenceEngine

    with open(data / "labels.csv", newline="", encoding="utf-8") as f:
        files = [data / row["file"] for row in csv.DictReader(f)]
    with tempfile.TemporaryDirectory() as home:
        os.environ["PNEUMOVIEW_HOME"] = home
        demo = ensure_demo_model(Path(home) / "demo")
        engines = {
            q: InferenceEngine.load(
                demo.bundle, clip_path=demo.clip, llama_path=demo.llama, device="cpu", precision="bf16", quantisation=q
            )
            for q in ("none", "int8", "int4")
        }
        crops = np.stack([engines["none"].prepare(p).crop for p in files])
        probs = {q: e.probabilities(crops) for q, e in engines.items()}
    median = float(np.median(probs["none"]))
    result: dict = {"images": len(files), "bf16_median_p": median}
    for q in ("int8", "int4"):
        delta = np.abs(probs[q] - probs["none"])
        row: dict = {"max_delta_p": float(delta.max()), "median_delta_p": float(np.median(delta))}
        for name, threshold in (("at_0.5", 0.5), ("at_bf16_median", median)):
            differ = (probs[q] > threshold) != (probs["none"] > threshold)
            near = np.abs(probs["none"] - threshold) <= 1e-3
            row[name] = {"labels_differ": int(differ.sum()), "differ_beyond_1e-3": int((differ & ~near).sum())}
        result[q] = row
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = measure(args.data)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

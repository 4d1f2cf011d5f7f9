"""Does retraining learn on real radiographs? Tiny PneumoLLM, 5-fold CV on ../shared/data/cxr-labelled.

    python benchmarks/train_cxr_labelled.py                       # demo base weights, 10 epochs (~3 min, 2 CPU cores)
    python benchmarks/train_cxr_labelled.py --epochs 30 --lr 2e-3 --random-base 0

Runs ``python -m training`` (the real CLI) on the 100 labelled paediatric radiographs
(pneumonia = the positive class, normal; one image per patient; read from ../shared, never
copied), then, as baselines measured in the same run on exactly the same folds (read back from
the model card):

* ridge regression on the 14x14 grid of patch means of the very same lung crops (spatial layout);
* ridge regression on the "patch-folded" mean (the 16x16 average over all patches): roughly what
  the class token of a randomly initialised ViT carries, since random attention averages patches.

With random (demo) frozen backbones the tiny model can only be as good as the features its random
vision tower passes on; the two baselines show how much signal the crops hold and how much of it
a random class token keeps.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cxr-labelled" / "labels.csv"


def ridge_cv(features, labels, folds, lam: float = 100.0) -> list[float]:  # type: ignore[no-untyped-def]
    import numpy as np

    from training.metrics import roc_auc

    aucs = []
    for f in folds:
        tr, va = list(f.train), list(f.val)
        mu, sd = features[tr].mean(0), features[tr].std(0) + 1e-6
        a, b = (features[tr] - mu) / sd, (features[va] - mu) / sd
        target = np.where(labels[tr] == 0, 1.0, -1.0)
        w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ target)
        aucs.append(roc_auc(b @ w, labels[va] == 0))
    return aucs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", default="10")
    parser.add_argument("--lr", default="1e-3")
    parser.add_argument("--random-base", default=None, help="random backbones from this seed instead of --demo")
    parser.add_argument("--threads", default="1")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"needs {args.data} (../shared/data/cxr-labelled)", file=sys.stderr)
        return 2
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bundle"
        base = ["--random-base", args.random_base] if args.random_base is not None else ["--demo"]
        cmd = [
            sys.executable,
            "-m",
            "training",
            str(args.data),
            *base,
            "--folds",
            "5",
            "--epochs",
            args.epochs,
            "--batch-size",
            "8",
            "--grad-accum",
            "1",
            "--lr",
            args.lr,
            "--warmup-epochs",
            "1",
            "--no-final",
            "--threads",
            args.threads,
            "--no-register",
            "--out",
            str(out),
        ]
        print("$ " + " ".join(cmd[1:]), flush=True)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        }
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - t0
        if done.returncode != 0:
            print(done.stdout[-2000:], done.stderr[-3000:], file=sys.stderr)
            return 1
        card = json.loads((out / "model_card.json").read_text())

    from training.data import CropCache, validate
    from training.privacy import load_patient_key, patient_hasher
    from training.splits import folds_from_record

    data = validate(args.data, folds=5, cache=CropCache(size=224))
    # The card lists keyed patient hashes: rebuild the split with this installation's key.
    folds = folds_from_record(card["split"], data.patients, patient_hasher(load_patient_key()))
    labels = np.array(data.labels)
    crops = np.stack([img.load_crop() for img in data.images])
    patches = crops.reshape(-1, 14, 16, 14, 16)
    grid = ridge_cv(patches.mean(axis=(2, 4)).reshape(len(labels), -1), labels, folds)
    folded = ridge_cv(patches.mean(axis=(1, 3)).reshape(len(labels), -1), labels, folds)
    model_aucs = [f["metrics"]["auc"] for f in card["folds"]]
    last_aucs = [f["history"][-1]["auc"] for f in card["folds"]]

    def line(name: str, values: list[float]) -> str:
        v = np.array(values)
        return f"{name:58s} AUC {100 * v.mean():5.1f} +/- {100 * v.std(ddof=1):4.1f}   folds {np.round(100 * v, 1).tolist()}"

    print(
        f"tiny PneumoLLM, {'demo' if args.random_base is None else 'random'} frozen backbones, "
        f"{args.epochs} epochs, 5-fold patient-level CV on {len(labels)} images ({seconds:.0f} s):"
    )
    print(line("  model, best-AVG epoch per fold (the paper's selection)", model_aucs))
    print(line("  model, last epoch (no selection on the validation fold)", last_aucs))
    print(line("  baseline: ridge on 14x14 patch means (spatial layout)", grid))
    print(line("  baseline: ridge on the patch-folded mean (random class token)", folded))
    s = card["summary"]
    print("  model summary: " + " | ".join(f"{k} {100 * v['mean']:.1f} +/- {100 * v['sd']:.1f}" for k, v in s.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time from the user's *Analyse* to the first result with the demo model, with and without the
start-up prewarm (:meth:`pneumoview.service.analysis.AnalysisClient.prewarm`, which the app calls
when a model is active), through the real analysis worker process.

    python benchmarks/prewarm.py [--rounds 3] [--image ../shared/data/cxr-dicom/RG1_UNCR.dcm] [--json OUT]

* **no prewarm** -- a fresh client; *Analyse* starts the worker, which imports torch / open_clip /
  transformers, loads the demo model, prepares the image and runs it.
* **prewarm** -- a fresh client prewarmed (worker started and model loaded in the background, as the
  app does at start while the user opens a folder); once the worker reports ``loaded``, *Analyse*.
  The time from prewarm to ``loaded`` is reported too (hidden from the user when it is shorter than
  the time they take to open their studies).

Rounds alternate the two cases (other load hits both alike); medians are reported with the load
average. Target: <= 2 s from *Analyse* to the first result with the demo model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = ROOT.parent / "shared" / "data" / "cxr-dicom" / "RG1_UNCR.dcm"
TARGET_S = 2.0


def first_result_seconds(client, spec, item) -> float:  # noqa: ANN001 - AnalysisClient, EngineSpec, WorkItem
    """Seconds from sending the analyse request to the first ``results`` event (then the rest drains)."""
    from pneumoview.service.analysis import analyse_request

    start = time.perf_counter()
    first: list[float] = []

    def on_event(event: dict) -> None:
        if event["event"] == "results" and not first:
            first.append(time.perf_counter() - start)
        if event["event"] == "error":
            raise SystemExit(f"analysis failed: {event.get('reason')}")

    client.request(spec, analyse_request(spec, [item], threshold=0.5, batch_size=1), on_event)
    if not first:
        raise SystemExit("the worker sent no result")
    return first[0]


def one_round(prewarm: bool, item) -> dict:  # noqa: ANN001 - WorkItem
    from pneumoview.service.analysis import AnalysisClient, EngineSpec

    spec = EngineSpec("demo")
    client = AnalysisClient()
    try:
        ready_s = None
        if prewarm:
            start = time.perf_counter()
            thread = client.prewarm(spec)
            assert thread is not None
            thread.join()
            if client.loaded is None:
                raise SystemExit("prewarm did not load the demo model")
            ready_s = time.perf_counter() - start
        return {
            "prewarm": prewarm,
            "prewarm_to_loaded_s": ready_s,
            "analyse_to_first_result_s": first_result_seconds(client, spec, item),
            "loadavg_1min": os.getloadavg()[0],
        }
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not args.image.is_file():
        raise SystemExit(f"no image at {args.image}: pass --image")
    from pneumoview.results import identify
    from pneumoview.service.analysis import WorkItem

    with tempfile.TemporaryDirectory() as home:
        os.environ.setdefault("PNEUMOVIEW_HOME", home)  # the demo model is generated there on first use
        item = WorkItem.for_identity("image", identify(args.image, "bench"))
        one_round(True, item)  # generates the demo model and its caches: every measured round finds them
        rounds = [one_round(prewarm, item) for _ in range(args.rounds) for prewarm in (False, True)]
    lines = []
    for prewarm in (False, True):
        times = [r["analyse_to_first_result_s"] for r in rounds if r["prewarm"] is prewarm]
        line = f"{'prewarm' if prewarm else 'no prewarm':10}: Analyse -> first result median {statistics.median(times):.2f} s "
        line += f"(all {', '.join(f'{t:.2f}' for t in times)})"
        if prewarm:
            ready = [r["prewarm_to_loaded_s"] for r in rounds if r["prewarm"]]
            line += f"; prewarm -> loaded {statistics.median(ready):.1f} s in the background"
            line += f"  target <= {TARGET_S} s: {'PASS' if statistics.median(times) <= TARGET_S else 'FAIL'}"
        lines.append(line)
    loads = [r["loadavg_1min"] for r in rounds]
    lines.append(f"load average (1 min) during the rounds: {min(loads):.1f}-{max(loads):.1f}, {os.cpu_count()} CPUs")
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"rounds": rounds, "summary": lines}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

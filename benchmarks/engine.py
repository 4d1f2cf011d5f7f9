"""CPU benchmark of the inference engine, against a naive baseline measured in the same run.

    python benchmarks/engine.py --size tiny           # seconds
    nice python benchmarks/engine.py --size full      # ~15 GB RAM, several minutes
    python benchmarks/engine.py --size both --json benchmarks/out/engine.json

What is measured (random weights, the real ``InferenceEngine.predict`` path incl. normalisation):

* **plan** -- the engine's CPU plan (``precision="auto"``): LLaMA decoder bf16, SDPA attention,
  the ViT in bf16 on CPUs with bf16 instructions (AVX512-BF16/AMX), else fp32. Seconds per study
  at batch 1 (median of several) and at batch 8 (time of a batch / 8), peak RSS.
* **mixed** -- the same with the ViT forced to fp32 (the plan for CPUs without bf16
  instructions), to show the choice on this machine.
* **int8** / **int4** -- the plan with the LLaMA decoder's linear layers in 8 / 4 bit on the CPU
  (:mod:`pneumoview.inference.quant_cpu`), built from the *same* random weights (each tensor is
  drawn from its own seeded generator), so their probabilities on 32 crops are compared with the
  bf16 plan's: max and median |delta p|.
* **cold / warm load** (``--load``) -- real-format random weights are written once to a folder
  (CLIP safetensors, a sharded Hugging Face LLaMA folder in bf16, a bundle), then
  ``InferenceEngine.load`` runs in a fresh process twice per plan: cold (empty prepared-weights
  cache) and warm (the cache written by the cold run; the OS page cache is whatever it is).
  Time to "ready" and peak RSS.
* **baseline** -- the same model naively: everything fp32, one image at a time. At full size an
  fp32 model needs ~27 GB, more than a 24 GB machine has, so the baseline is built with only 8 of
  the 32 decoder layers and its time extrapolated: ViT time + (rest of the forward) x 32/8 (the
  decoder layers are identical); its memory is given as computed (parameters x 4 bytes).

Each measurement runs in its own child process, so peak RSS (``ru_maxrss``) is per measurement.
Targets (full size): <= 5 s per study at batch 1, <= 2 s per study at batch 8, peak RSS <= 16 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = {"tiny": "pneumollm-tiny", "full": "pneumollm-vitl14-llama7b"}
TARGETS = {"batch1_s": 5.0, "batch8_s_per_study": 2.0, "peak_rss_gb": 16.0}
BASELINE_LAYERS_FULL = 8


def _crops(n: int, seed: int = 0):
    import numpy as np

    return np.random.default_rng(seed).random((n, 224, 224), dtype=np.float32)


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def seconds_per_call(fn, repeats: int) -> list[float]:
    """Wall-clock seconds of each of ``repeats`` calls of ``fn``."""
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


QUANTISED = ("int8", "int4")
AGREEMENT_CROPS = 32


def child_plan(size: str, repeats1: int, repeats8: int, variant: str = "plan") -> dict:
    """The engine's CPU plan (auto precision); ``variant="mixed"`` forces the ViT-fp32 mix;
    ``"int8"`` / ``"int4"`` quantise the decoder's linear layers."""
    import torch

    from pneumoview.inference.config import load_config
    from pneumoview.inference.engine import InferenceEngine
    from pneumoview.inference.plans import choose_plan

    config = load_config(CONFIGS[size])
    plan = choose_plan(
        config,
        device="cpu",
        precision="auto",
        batch_size=8,
        quantisation=variant if variant in QUANTISED else "none",
        cpu_bf16=False if variant == "mixed" else None,
    )
    start = time.perf_counter()
    engine = InferenceEngine.random(config, plan)
    build_s = time.perf_counter() - start
    one, eight = _crops(1), _crops(8, seed=1)
    engine.predict(one, batch_size=1)  # warm-up (first-call kernel selection)
    t1 = seconds_per_call(lambda: engine.predict(one, batch_size=1), repeats1)
    engine.predict(eight, batch_size=8)  # warm-up: new shapes build new oneDNN kernels on first use
    t8 = seconds_per_call(lambda: engine.predict(eight, batch_size=8), repeats8)
    probs = [p.probability for p in engine.predict(_crops(AGREEMENT_CROPS, seed=2), batch_size=8)]
    return {
        "probabilities": probs,
        "what": variant,
        "size": size,
        "plan": plan.describe(),
        "threads": torch.get_num_threads(),
        "build_s": build_s,
        "batch1_s": statistics.median(t1),
        "batch1_all": t1,
        "batch8_s_per_study": statistics.median(t8) / 8,
        "batch8_all": t8,
        "peak_rss_gb": _peak_rss_gb(),
    }


def child_baseline(size: str, repeats1: int) -> dict:
    """Naive: the same model in fp32, one image at a time (full size: 8 decoder layers, extrapolated)."""
    import dataclasses

    import torch

    from pneumoview.inference.config import load_config
    from pneumoview.inference.engine import InferenceEngine
    from pneumoview.inference.plans import choose_plan, parameter_split

    config = load_config(CONFIGS[size])
    full_layers = config.decoder.layers
    layers = BASELINE_LAYERS_FULL if size == "full" else full_layers
    built = config.replace(decoder=dataclasses.replace(config.decoder, layers=layers))
    plan = choose_plan(built, device="cpu", precision="fp32", quantisation="none", batch_size=1)
    start = time.perf_counter()
    engine = InferenceEngine.random(built, plan)
    build_s = time.perf_counter() - start
    one = _crops(1)
    engine.predict(one, batch_size=1)
    t_all = seconds_per_call(lambda: engine.predict(one, batch_size=1), repeats1)
    pixels = engine._prepare(one)
    with torch.inference_mode():
        t_vit = seconds_per_call(lambda: engine.model.source_tokens(pixels), repeats1)
    all_s, vit_s = statistics.median(t_all), statistics.median(t_vit)
    split = parameter_split(config)
    fp32_weights_gb = (
        4 * (split["vision"] + split["decoder_linear"] + split["decoder_other"] + split["trainable"]) / 1e9
    )
    result = {
        "what": "baseline",
        "size": size,
        "plan": plan.describe(),
        "threads": torch.get_num_threads(),
        "build_s": build_s,
        "vit_s": vit_s,
        "measured_batch1_s": all_s,
        "decoder_layers_built": layers,
        "peak_rss_gb_measured": _peak_rss_gb(),
    }
    if layers == full_layers:
        result.update(batch1_s=all_s, batch8_s_per_study=all_s, peak_rss_gb=_peak_rss_gb(), extrapolated=False)
    else:
        est = vit_s + (all_s - vit_s) * full_layers / layers
        result.update(
            batch1_s=est,
            batch8_s_per_study=est,
            peak_rss_gb=fp32_weights_gb,
            extrapolated=True,
            note=f"fp32 full model (~{fp32_weights_gb:.0f} GB) does not fit this machine: time "
            f"extrapolated from {layers} of {full_layers} decoder layers, memory = fp32 weights",
        )
    return result


def write_weights(size: str, folder: Path) -> dict:
    """Random base weights in real formats (CLIP safetensors, sharded bf16 HF LLaMA folder) + a bundle."""
    import torch

    from pneumoview.inference import safetensors_mmap
    from pneumoview.inference.bundle import Manifest, save_bundle
    from pneumoview.inference.config import hf_llama_config, load_config
    from pneumoview.inference.engine import InferenceEngine
    from pneumoview.inference.fingerprints import _combine_digests, _tensor_digest
    from pneumoview.inference.model import build_model

    config = load_config(CONFIGS[size])
    draw = InferenceEngine.random_tensor
    shapes = build_model(config, device="meta")
    folder.mkdir(parents=True, exist_ok=True)
    visual = {k: draw(k, v, torch.bfloat16, "cpu") for k, v in shapes.visual.state_dict().items()}
    safetensors_mmap.save(folder / "clip.safetensors", {f"visual.{k}": v for k, v in visual.items()})
    clip_fp = _combine_digests({k: _tensor_digest(k, v) for k, v in visual.items()})
    del visual
    llama = folder / "llama"
    llama.mkdir(exist_ok=True)
    (llama / "config.json").write_text(json.dumps(hf_llama_config(config.decoder, torch_dtype="bfloat16")))
    decoder_shapes = shapes.decoder.state_dict()
    per_shard, digests, weight_map = 4, {}, {}
    names = list(decoder_shapes)
    groups: dict[str, list[str]] = {}
    for k in names:
        layer = int(k.split(".")[1]) // per_shard if k.startswith("layers.") else -1
        groups.setdefault(f"model-{layer + 1:05d}.safetensors", []).append(k)
    for file, keys in groups.items():
        part = {k: draw(k, decoder_shapes[k], torch.bfloat16, "cpu") for k in keys}
        digests.update({k: _tensor_digest(k, v) for k, v in part.items()})
        safetensors_mmap.save(llama / file, {f"model.{k}": v for k, v in part.items()})
        weight_map.update({f"model.{k}": file for k in keys})
        del part
    (llama / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    trained = _fresh_trainables(config)
    manifest = Manifest.create(
        config,
        base_fingerprints={"clip": clip_fp, "llama": _combine_digests(digests)},
        name=f"random {config.name} (benchmark only)",
        demo=True,
    )
    save_bundle(folder / "bundle", trained, manifest)
    return {"folder": str(folder)}


def _fresh_trainables(config) -> dict:
    """Trainable tensors of a fresh model without allocating its backbones."""
    from pneumoview.inference.model import build_trainable_modules

    state = {}
    for prefix, module in build_trainable_modules(config).items():
        if module is not None:
            state.update({f"{prefix}.{k}": v.detach().float().contiguous() for k, v in module.state_dict().items()})
    return state


def _memory_gb() -> dict[str, float]:
    """This process's memory now: RSS, USS (private) and PSS, GB; plus the peak RSS so far."""
    import psutil

    info = psutil.Process().memory_full_info()
    return {
        "rss_gb": info.rss / 1e9,
        "uss_gb": info.uss / 1e9,
        "pss_gb": getattr(info, "pss", 0) / 1e9,
        "peak_rss_gb": _peak_rss_gb(),
    }


def _load_engine(folder: Path, quantisation: str):
    from pneumoview.inference.engine import InferenceEngine

    return InferenceEngine.load(
        folder / "bundle",
        clip_path=folder / "clip.safetensors",
        llama_path=folder / "llama",
        device="cpu",
        precision="auto",
        quantisation=quantisation,
        batch_size=1,
    )


def child_load(size: str, folder: Path, quantisation: str, repeats1: int, evaluate: bool) -> dict:
    """``InferenceEngine.load`` of the written weights in this fresh process: seconds to ready (and per
    step), memory; ``evaluate``: batch-1 repetitions and the 32 agreement crops at batch 8 as well."""
    import torch

    start = time.perf_counter()
    import open_clip.model  # noqa: F401  (what the app's worker imports while idle: counted apart)
    import transformers.models.llama.modeling_llama  # noqa: F401

    import pneumoview.inference.engine  # noqa: F401

    imports = time.perf_counter() - start
    start = time.perf_counter()
    engine = _load_engine(folder, quantisation)
    ready = time.perf_counter() - start
    loaded = _memory_gb()
    one = _crops(1)
    t1 = seconds_per_call(lambda: engine.predict(one, batch_size=1), repeats1 if evaluate else 1)
    result = {
        "what": f"load-{quantisation}",
        "size": size,
        "plan": engine.plan.describe(),
        "ready_s": ready,
        "imports_s": imports,
        "phases": {k: round(v, 2) for k, v in engine.report.phases.items()},
        "cached": "prepared weights mapped from the cache" in engine.report.notes,
        "first_batch1_s": t1[0],
        "batch1_s": statistics.median(t1[1:] or t1),
        "batch1_all": t1,
        "memory_after_load": loaded,
        "threads": torch.get_num_threads(),
    }
    if evaluate:
        crops = _crops(AGREEMENT_CROPS, seed=2)
        batches, probs = [], []
        for begin in range(0, AGREEMENT_CROPS, 8):
            tick = time.perf_counter()
            probs += [p.probability for p in engine.predict(crops[begin : begin + 8], batch_size=8)]
            batches.append(time.perf_counter() - tick)
        result.update(
            probabilities=probs,
            batch8_all=batches,
            batch8_s_per_study=statistics.median(batches[1:]) / 8,  # the first builds the batch-8 kernels
        )
    result.update(memory_end=_memory_gb(), peak_rss_gb=_peak_rss_gb())
    return result


def child_interleave(size: str, folder: Path, repeats1: int, plans: list[str]) -> dict:
    """Batch-1 latency of several plans loaded side by side (from their prepared caches / the
    memory-mapped files), run in turn (plan A, plan B, plan A, ...) so that other load hits each
    alike: medians per plan. Needs each plan's prepared-weights cache written first (load runs)."""
    engines = {q: _load_engine(folder, q) for q in plans}
    one = _crops(1)
    for engine in engines.values():
        engine.predict(one, batch_size=1)  # warm-up: first-call kernel choice, pages touched
    times: dict[str, list[float]] = {q: [] for q in plans}
    loads: list[float] = []
    for _ in range(repeats1):
        for q, engine in engines.items():
            times[q] += seconds_per_call(lambda engine=engine: engine.predict(one, batch_size=1), 1)
        loads.append(os.getloadavg()[0])
    return {
        "what": "interleaved",
        "size": size,
        "plans": {q: e.plan.describe() for q, e in engines.items()},
        "batch1_all": times,
        "batch1_median": {q: statistics.median(t) for q, t in times.items()},
        "loadavg_during": loads,
        "memory_end": _memory_gb(),
    }


def run_child(kind: str, size: str, nice: bool, extra: list[str] | None = None) -> dict:
    repeats = {"tiny": (20, 10), "full": (2, 1)}[size]
    cmd = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--size",
        size,
        "--repeats1",
        str(repeats[0]),
        "--repeats8",
        str(repeats[1]),
        *(extra or []),
    ]
    if nice:
        cmd = ["nice", "-n", "10", *cmd]
    print(f"[{time.strftime('%H:%M:%S')}] {kind} {size} ...", file=sys.stderr, flush=True)
    load_before = os.getloadavg()[0]
    out = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{kind} {size} failed:\n{out.stderr[-4000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["loadavg_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]  # other processes' share
    return result


def machine() -> str:
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def agreement(results: list[dict]) -> list[str]:
    """max / median |delta p| of each quantised plan vs the bf16 plan on the same random weights."""
    import numpy as np

    lines = []
    for size in ("tiny", "full"):
        ref = next((r for r in results if r["size"] == size and r["what"] == "plan"), None)
        for r in results:
            if ref and r["size"] == size and r["what"] in QUANTISED:
                delta = np.abs(np.array(r["probabilities"]) - np.array(ref["probabilities"]))
                r["delta_p_max"], r["delta_p_median"] = float(delta.max()), float(np.median(delta))
                lines.append(
                    f"{size}: {r['what']} vs bf16 plan over {delta.size} crops: max |delta p| "
                    f"{delta.max():.2e}, median {np.median(delta):.2e}; batch 1 "
                    f"{r['batch1_s']:.3f} s vs {ref['batch1_s']:.3f} s"
                )
    return lines


def load_agreement(loads: list[dict]) -> list[str]:
    """max / median |delta p| of each quantised load vs the bf16 load (same weight files, same crops)."""
    import numpy as np

    lines = []
    for size in ("tiny", "full"):
        ref = next((r for r in loads if r["size"] == size and r["what"] == "load-none" and "probabilities" in r), None)
        for r in loads:
            if ref and r["size"] == size and r["what"] != "load-none" and "probabilities" in r:
                delta = np.abs(np.array(r["probabilities"]) - np.array(ref["probabilities"]))
                r["delta_p_max"], r["delta_p_median"] = float(delta.max()), float(np.median(delta))
                lines.append(
                    f"{size}: {r['what']} vs load-none (bf16) over {delta.size} crops: max |delta p| "
                    f"{delta.max():.2e}, median {np.median(delta):.2e}"
                )
    return lines


def report(results: list[dict]) -> str:
    lines = [f"machine: {machine()}", ""]
    loads = [r for r in results if r["what"].startswith("load-")]
    extra = [r for r in results if r["what"] == "interleaved"]
    results = [r for r in results if not r["what"].startswith("load-") and r["what"] != "interleaved"]
    lines.append(
        f"{'size':5} {'what':9} {'s/study b1':>11} {'s/study b8':>11} {'peak RSS GB':>12} {'build s':>8}  plan"
    )
    for r in results:
        flag = " (extrapolated)" if r.get("extrapolated") else ""
        lines.append(
            f"{r['size']:5} {r['what']:9} {r['batch1_s']:11.3f} {r['batch8_s_per_study']:11.3f} "
            f"{r['peak_rss_gb']:12.2f} {r['build_s']:8.1f}  {r['plan']}{flag} "
            f"[load {r['loadavg_1min'][0]:.1f}->{r['loadavg_1min'][1]:.1f}]"
        )
    for size in ("tiny", "full"):
        plan = next((r for r in results if r["size"] == size and r["what"] == "plan"), None)
        base = next((r for r in results if r["size"] == size and r["what"] == "baseline"), None)
        for what in ("mixed", "plan"):
            r = next((r for r in results if r["size"] == size and r["what"] == what), None)
            if r and base:
                lines.append(
                    f"{size}: {what} vs baseline at batch 1 x{base['batch1_s'] / r['batch1_s']:.2f}, "
                    f"batch 8 x{base['batch1_s'] / r['batch8_s_per_study']:.2f} per study"
                )
        if plan and size == "full":
            for key, limit in TARGETS.items():
                ok = plan[key] <= limit
                lines.append(f"  target {key} <= {limit}: {plan[key]:.2f} {'PASS' if ok else 'FAIL'}")
        if base and base.get("note"):
            lines.append(f"  baseline note: {base['note']}")
    lines += agreement(results)
    for r in loads:
        mem = r.get("memory_after_load", {})
        lines.append(
            f"{r['size']}: {r['what']} {r.get('run', 'warm' if r['cached'] else 'cold')}"
            f"{' (cache hit)' if r['cached'] else ''}: ready {r['ready_s']:.1f} s "
            f"(+ imports {r['imports_s']:.1f} s), peak RSS {r['peak_rss_gb']:.2f} GB "
            f"(after load: RSS {mem.get('rss_gb', 0):.2f}, USS {mem.get('uss_gb', 0):.2f}, PSS {mem.get('pss_gb', 0):.2f}), "
            f"batch 1 {r['batch1_s']:.2f} s (first {r['first_batch1_s']:.2f} s)"
            + (f", batch 8 {r['batch8_s_per_study']:.2f} s/study" if "batch8_s_per_study" in r else "")
            + f"  {r['plan']} [load {r['loadavg_1min'][0]:.1f}->{r['loadavg_1min'][1]:.1f}]"
        )
        lines.append("    steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in r.get("phases", {}).items()))
    lines += load_agreement(loads)
    for r in (r for r in extra if r["what"] == "interleaved"):
        medians = ", ".join(f"{q} {t:.2f} s" for q, t in r["batch1_median"].items())
        runs = len(next(iter(r["batch1_all"].values())))
        lines.append(
            f"{r['size']}: batch 1 interleaved ({runs} rounds, plans in turn): median {medians} "
            f"[load {min(r['loadavg_during']):.1f}-{max(r['loadavg_during']):.1f}]"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "full", "both"), default="tiny")
    parser.add_argument(
        "--only",
        help="comma-separated measurements out of baseline,mixed,plan,int8,int4 (default: all; '' for none: "
        "only the --load runs)",
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--no-nice", action="store_true", help="do not lower the children's priority")
    parser.add_argument(
        "--load",
        type=Path,
        metavar="DIR",
        help="also measure cold/warm InferenceEngine.load "
        "(weights written to DIR once; the prepared-weights cache goes under DIR/home)",
    )
    parser.add_argument(
        "--load-plans", default="int4,none,int8", help="quantisations for --load, in order (default int4,none,int8)"
    )
    parser.add_argument(
        "--interleave",
        metavar="PLANS",
        help="with --load: batch-1 latency of these plans (e.g. none,int8) loaded side by side and run in turn "
        "(the last --load-plans entry keeps its prepared cache: name the quantised plan last there)",
    )
    parser.add_argument(
        "--child",
        choices=("plan", "mixed", "baseline", *QUANTISED, "write", "load", "interleave"),
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--evaluate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quantisation", default="none", help=argparse.SUPPRESS)
    parser.add_argument("--repeats1", type=int, default=5, help=argparse.SUPPRESS)
    parser.add_argument("--repeats8", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        if args.child in ("plan", "mixed", *QUANTISED):
            result = child_plan(args.size, args.repeats1, args.repeats8, args.child)
        elif args.child == "write":
            result = write_weights(args.size, args.load)
        elif args.child == "load":
            result = child_load(args.size, args.load, args.quantisation, args.repeats1, args.evaluate)
        elif args.child == "interleave":
            result = child_interleave(args.size, args.load, args.repeats1, args.quantisation.split(","))
        else:
            result = child_baseline(args.size, args.repeats1)
        print(json.dumps(result))
        return 0
    sizes = ("tiny", "full") if args.size == "both" else (args.size,)
    kinds = tuple(args.only.split(",")) if args.only is not None else ("baseline", "mixed", "plan", *QUANTISED)
    if not set(kinds) <= {"", "baseline", "mixed", "plan", *QUANTISED}:
        parser.error("--only takes baseline, mixed, plan, int8 and/or int4")
    results = [run_child(kind, size, nice=not args.no_nice) for size in sizes for kind in kinds if kind]
    if args.load:
        os.environ["PNEUMOVIEW_HOME"] = str(args.load / "home")  # the children's prepared-weights cache
        for size in sizes:
            target = args.load / size
            if not (target / "bundle" / "manifest.json").is_file():
                run_child("write", size, nice=not args.no_nice, extra=["--load", str(target)])
            for quantisation in args.load_plans.split(","):
                shutil.rmtree(args.load / "home" / "cache" / "prepared-weights", ignore_errors=True)  # cold first
                for run in ("cold", "warm"):
                    evaluate = ["--evaluate", "--repeats1", "4"] if run == "warm" else []
                    result = run_child(
                        "load",
                        size,
                        nice=not args.no_nice,
                        extra=["--load", str(target), "--quantisation", quantisation, *evaluate],
                    )
                    results.append({**result, "run": run})  # bf16 from bf16 files caches nothing: say which
            if args.interleave:
                extra = ["--load", str(target), "--quantisation", args.interleave, "--repeats1", "7"]
                results.append(run_child("interleave", size, nice=not args.no_nice, extra=extra))
    text = report(results)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine(), "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

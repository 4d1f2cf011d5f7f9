"""Fuzz benchmark: mutated DICOM files through everything a user's file goes through.

Each case takes a real file (pydicom's test files, the pydicom-data files up to ~1 MB, and the
real chest CRs RG1 uncompressed / JPEG 2000 from ``../shared/data/cxr-dicom`` or pydicom-data),
mutates it with one of :data:`MUTATIONS` (seeded per case, so any case can be rebuilt from
``--seed`` and its number), and runs :func:`exercise`: header read (``read_record``), display
(``load_display_image`` + ``render``) and the model crop (``prepare``, i.e. ``load_grey`` + lung
localiser). Outcomes per mutation class:

* ``ok``: decoded and cropped; ``error``: a per-file PneumoViewError (wanted), by reason code;
* ``traceback``: any other exception reached the caller (a bug);
* ``death``: the process running the case died (signal or exit status; e.g. a codec abort);
* ``hang``: a case ran longer than ``--hang-s``;
* ``memory``: the process running the case grew by more than ``--memory-mib`` (e.g. a deflate bomb).

Cases run in ``--jobs`` child processes (each a session of their own, restarted after a death
or hang, which is charged to the case that was running). The same script measures any checkout:
``PYTHONPATH=/path/to/checkout python benchmarks/fuzz.py --cases 3000`` imports that
checkout's ``pneumoview`` (only ``read_record``, ``load_display_image``, ``render`` and
``prepare`` are used). CI runs a small sample (tests/dicom/test_dicom_fuzz.py).

Usage: ``python benchmarks/fuzz.py [--cases 10000] [--jobs 2] [--seed 20261201] [--json]``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

SEED = 20261201
SHARED_CXR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cxr-dicom"
#: Small real files covering the codecs: native LE/BE/implicit, RLE, JPEG baseline/lossless,
#: JPEG-LS, JPEG 2000, palette, multi-frame, VOI LUT, Modality LUT.
TEST_SOURCES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_implicit.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_jp2klossless.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "SC_rgb_jpeg_gdcm.dcm",
    "JPGLosslessP14SV1_1s_1f_8b.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
    "OBXXXX1A.dcm",
    "vlut_04.dcm",
    "mlut_18.dcm",
    "SC_rgb_rle_2frame.dcm",
    "US1_J2KR.dcm",
    "JPEG-LL.dcm",
    "JPEG2000.dcm",
]
#: pydicom-data files larger than this are left out (except the real CRs, drawn less often).
MAX_SOURCE_BYTES = 1_100_000
REAL_CR_SHARE = 0.03
KEY_TAGS = [
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "NumberOfFrames",
    "PixelData",
    "WindowCenter",
    "WindowWidth",
    "RescaleSlope",
    "RescaleIntercept",
    "VOILUTSequence",
    "ModalityLUTSequence",
    "RedPaletteColorLookupTableData",
    "RedPaletteColorLookupTableDescriptor",
    "SOPClassUID",
    "StudyInstanceUID",
]
ODD_VALUES: dict[str, list[object]] = {
    "Rows": [0, 1, 3, 65535],
    "Columns": [0, 1, 7, 65535],
    "BitsAllocated": [0, 1, 7, 12, 32, 64],
    "BitsStored": [0, 1, 17, 33],
    "HighBit": [0, 40],
    "PixelRepresentation": [1, 2],
    "SamplesPerPixel": [0, 2, 3, 4],
    "PhotometricInterpretation": ["", "RGB", "YBR_FULL_422", "PALETTE COLOR", "MONOCHROME1", "HSV", "NONSENSE"],
    "NumberOfFrames": [0, -1, 2, 100000],
    "WindowCenter": ["abc", "1e400", "-0"],
    "WindowWidth": ["0", "-5", "nan", "1e-30"],
    "RescaleSlope": ["0", "nan", "1e38", "x"],
    "VOILUTFunction": ["SIGMOID", "BOGUS", ""],
    "PresentationLUTShape": ["INVERSE", "??"],
}


# ----------------------------------------------------------------------------- mutations


def _dataset(raw: bytes) -> Any:
    import pydicom

    return pydicom.dcmread(io.BytesIO(raw), force=True)


def _save(ds: Any, path: Path) -> None:
    ds.save_as(path, enforce_file_format=False)


def truncate(raw: bytes, rng: random.Random, path: Path) -> str:
    cut = rng.randrange(0, len(raw))
    path.write_bytes(raw[:cut])
    return f"truncate at {cut}"


def flip(raw: bytes, rng: random.Random, path: Path) -> str:
    data = bytearray(raw)
    count = rng.randint(1, 24)
    header_end = min(len(data), 4096)
    for _ in range(count):
        pos = rng.randrange(header_end) if rng.random() < 0.7 else rng.randrange(len(data))
        data[pos] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))
    return f"flip {count} bits"


def wrong_length(raw: bytes, rng: random.Random, path: Path) -> str:
    ds = _dataset(raw)
    tags = [elem.tag for elem in ds.iterall()] + [elem.tag for elem in ds.file_meta]
    data = bytearray(raw)
    little = not bytes(raw[:200]).count(b"\x00\x08\x00")
    done = []
    for tag in rng.sample(tags, k=min(len(tags), rng.randint(1, 3))):
        pattern = struct.pack("<HH" if little else ">HH", tag.group, tag.element)
        pos = bytes(data).find(pattern)
        if pos < 0 or pos + 8 > len(data):
            continue
        value = rng.choice([0, 1, 3, 0xFFFF, 0xFFFFFFFF, rng.randrange(1 << 32), len(raw) * 4])
        if rng.random() < 0.5:
            data[pos + 6 : pos + 8] = struct.pack("<H", value & 0xFFFF)
        else:
            data[pos + 4 : pos + 8] = struct.pack("<I", value & 0xFFFFFFFF)
        done.append(f"{tag}={value}")
    path.write_bytes(bytes(data))
    return f"wrong length {done}"


def delete_tags(raw: bytes, rng: random.Random, path: Path) -> str:
    ds = _dataset(raw)
    present = [k for k in KEY_TAGS if k in ds]
    gone = rng.sample(present, k=min(len(present), rng.randint(1, 3)))
    for keyword in gone:
        delattr(ds, keyword)
    if rng.random() < 0.15 and "TransferSyntaxUID" in ds.file_meta:
        del ds.file_meta.TransferSyntaxUID
        gone.append("TransferSyntaxUID")
    _save(ds, path)
    return f"delete {gone}"


def odd_value(raw: bytes, rng: random.Random, path: Path) -> str:
    ds = _dataset(raw)
    changed = []
    for keyword in rng.sample(sorted(ODD_VALUES), k=rng.randint(1, 3)):
        value = rng.choice(ODD_VALUES[keyword])
        try:
            setattr(ds, keyword, value)
        except (ValueError, TypeError, OverflowError):
            continue
        changed.append(f"{keyword}={value!r}")
    _save(ds, path)
    return f"odd values {changed}"


def overwrite_pixels(raw: bytes, rng: random.Random, path: Path) -> str:
    data = bytearray(raw)
    start = rng.randrange(len(data) // 2, len(data))
    length = rng.randint(1, max(1, len(data) - start))
    fill = bytes(rng.getrandbits(8) for _ in range(min(length, 64))) * (length // 64 + 1)
    data[start : start + length] = fill[:length]
    path.write_bytes(bytes(data))
    return f"overwrite {length} bytes at {start}"


def jpeg_stream(raw: bytes, rng: random.Random, path: Path) -> str:
    """Corrupt the inside of the first encapsulated frame, keeping the DICOM header consistent."""
    from pydicom.encaps import get_frame

    ds = _dataset(raw)
    if not ds.file_meta.get("TransferSyntaxUID", None) or not ds.file_meta.TransferSyntaxUID.is_compressed:
        return overwrite_pixels(raw, rng, path)
    frame = get_frame(ds.PixelData, 0, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1))
    start = raw.find(frame)
    if start < 0 or len(frame) < 64:
        return overwrite_pixels(raw, rng, path)
    data = bytearray(raw)
    lo, hi = start + min(len(frame) // 8, 600), start + len(frame) - 2
    kind = rng.choice(["bytes", "marker", "zeros", "tail"])
    pos = rng.randrange(lo, hi)
    if kind == "bytes":
        for i in range(rng.randint(1, 64)):
            if pos + i < hi:
                data[pos + i] = rng.randrange(256)
    elif kind == "marker":
        data[pos : pos + 2] = bytes([0xFF, rng.choice([0xC4, 0xDA, 0xD9, 0xD8, 0xC3, 0xDD, 0xD0, 0xFE, 0x4F, 0x90])])
    elif kind == "zeros":
        end = min(hi, pos + rng.randint(16, 4096))
        data[pos:end] = bytes(end - pos)
    else:
        data[pos:hi] = b"\xff" * (hi - pos)
    path.write_bytes(bytes(data))
    return f"stream {kind} at +{pos - start}"


def deflate(raw: bytes, rng: random.Random, path: Path) -> str:
    """Deflated Explicit VR Little Endian: valid, truncated, corrupt, or a bomb (a header, then
    hundreds of MiB of zeros)."""
    from pydicom.filereader import _read_file_meta_info, read_preamble
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = _dataset(raw)
    if "TransferSyntaxUID" in ds.file_meta and ds.file_meta.TransferSyntaxUID.is_compressed:
        ds = _dataset(Path(_testdata("CT_small.dcm")).read_bytes())
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    with io.BytesIO(data) as handle:
        read_preamble(handle, False)
        _read_file_meta_info(handle)
        split = handle.tell()
    kind = rng.choice(["valid", "truncated", "corrupt", "bomb"])
    if kind == "truncated":
        data = data[: rng.randrange(split, len(data))]
    elif kind == "corrupt":
        body = bytearray(data[split:])
        for _ in range(rng.randint(1, 8)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        data = data[:split] + bytes(body)
    elif kind == "bomb":
        packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        zeros = bytes(1 << 20)
        head = zlib.decompress(data[split:], -zlib.MAX_WBITS)
        head = head[: head.find(b"\xe0\x7f\x10\x00")] if b"\xe0\x7f\x10\x00" in head else head
        first = packer.compress(head) + packer.compress(zeros) + packer.flush(zlib.Z_SYNC_FLUSH)
        repeat = packer.compress(zeros) + packer.flush(zlib.Z_SYNC_FLUSH)
        mib = rng.choice([128, 512])
        data = data[:split] + first + repeat * (mib - 1) + packer.flush()
        kind = f"bomb {mib} MiB"
    path.write_bytes(data)
    return f"deflate {kind}"


def tiny(raw: bytes, rng: random.Random, path: Path) -> str:
    """A valid image of 1..3 rows or columns (degenerate shapes for the display and the localiser)."""
    import numpy as np
    from pydicom.uid import ExplicitVRLittleEndian

    ds = _dataset(Path(_testdata("CT_small.dcm")).read_bytes())
    rows, cols = rng.choice(
        [(1, rng.randint(1, 600)), (rng.randint(1, 600), 1), (rng.randint(1, 3), rng.randint(1, 3))]
    )
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns = rows, cols
    ds.PixelData = (np.arange(rows * cols, dtype=np.uint16) % 2000).astype("<u2").tobytes()
    _save(ds, path)
    return f"tiny {rows}x{cols}"


MUTATIONS: dict[str, Callable[[bytes, random.Random, Path], str]] = {
    f.__name__: f
    for f in (truncate, flip, wrong_length, delete_tags, odd_value, overwrite_pixels, jpeg_stream, deflate, tiny)
}


def _testdata(name: str) -> str:
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name)
    if not found:
        raise FileNotFoundError(name)
    return str(found)


def sources() -> tuple[list[Path], list[Path]]:
    """(small sources, real chest CRs)."""
    from pydicom.data import get_testdata_file

    small = [Path(_testdata(n)) for n in TEST_SOURCES]
    store = Path(_testdata("RG1_UNCR.dcm")).parent
    small += sorted(
        p for p in store.iterdir() if p.is_file() and p.stat().st_size <= MAX_SOURCE_BYTES and p.suffix == ".dcm"
    )
    real = [SHARED_CXR / n for n in ("RG1_UNCR.dcm", "RG1_J2KR.dcm") if (SHARED_CXR / n).is_file()]
    if not real:
        real = [Path(str(get_testdata_file(n))) for n in ("RG1_UNCR.dcm", "RG1_J2KR.dcm")]
    return small, real


def make_case(seed: int, index: int, folder: Path, small: list[Path], real: list[Path]) -> tuple[str, str, str, Path]:
    """(class, source name, description, path) of case ``index``: reproducible from (seed, index)."""
    rng = random.Random(f"{seed}-{index}")
    name = rng.choice(sorted(MUTATIONS))
    source = rng.choice(real) if rng.random() < REAL_CR_SHARE else rng.choice(small)
    path = folder / f"case{index:06d}.dcm"
    what = MUTATIONS[name](source.read_bytes(), rng, path)
    return name, source.name, what, path


# ----------------------------------------------------------------------------- one case


def exercise(path: Path) -> tuple[str, list[str]]:
    """Everything a user's file goes through. Returns ("ok" | "error", reason codes).

    Exceptions other than PneumoViewError propagate: the caller counts them as tracebacks.
    """
    from pneumoview.dicom.display import load_display_image, render
    from pneumoview.dicom.scan import read_record
    from pneumoview.errors import PneumoViewError
    from pneumoview.preprocess import prepare

    codes: list[str] = []
    outcome = "ok"
    for step in (read_record, lambda p: render(load_display_image(p)), prepare):
        try:
            step(path)
        except PneumoViewError as exc:
            outcome = "error"
            codes.append(getattr(exc, "code", None) or type(exc).__name__)
    return outcome, codes


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(seed: int, start: int, step: int, stop: int, folder: Path, log: Path, memory_mib: float) -> None:
    """Child process: cases start, start+step, ... < stop; one "S i" line before and one JSON line after each."""
    import logging

    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    try:
        from pneumoview.dicom import sandbox

        sandbox.configure(workers=1)
    except ImportError:  # a checkout without the sandbox
        pass
    small, real = sources()
    with log.open("a", encoding="utf-8") as out:
        for index in range(start, stop, step):
            out.write(f"S {index}\n")
            out.flush()
            try:
                name, source, what, path = make_case(seed, index, folder, small, real)
            except Exception as exc:  # noqa: BLE001  (a mutation pydicom cannot write is skipped)
                out.write(json.dumps({"i": index, "skipped": f"{type(exc).__name__}"}) + "\n")
                continue
            before, started = _maxrss_mib(), time.monotonic()
            record: dict[str, Any] = {"i": index, "cls": name, "source": source, "what": what}
            try:
                record["outcome"], record["codes"] = exercise(path)
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt):
                    raise
                record["outcome"], record["codes"] = "traceback", [type(exc).__name__]
                record["detail"] = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
                record["where"] = traceback.format_exc(limit=-2)[-600:]
            grown = _maxrss_mib() - before
            if grown > memory_mib:
                record["outcome"] = "memory"
                record["detail"] = f"process grew by {grown:.0f} MiB"
            record["s"] = round(time.monotonic() - started, 3)
            out.write(json.dumps(record) + "\n")
            out.flush()
            path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- supervisor


def _read_log(log: Path, offset: int) -> tuple[list[str], int]:
    if not log.exists():
        return [], offset
    with log.open("rb") as handle:
        handle.seek(offset)
        data = handle.read()
    end = data.rfind(b"\n") + 1
    return data[:end].decode("utf-8", "replace").splitlines(), offset + end


class _Slot:
    """One child process working through cases start, start+step, ... (restarted after a death or hang)."""

    def __init__(self, number: int, args: argparse.Namespace, folder: Path) -> None:
        self.number, self.args, self.folder = number, args, folder
        self.log = folder / f"log{number}.txt"
        self.offset = 0
        self.next = number
        self.running: int | None = None
        self.since = time.monotonic()
        self.process: subprocess.Popen[bytes] | None = None
        self.records: list[dict[str, Any]] = []

    def start(self) -> bool:
        if self.next >= self.args.cases:
            self.process = None
            return False
        work = self.folder / f"work{self.number}"
        work.mkdir(exist_ok=True)
        command = [
            sys.executable,
            __file__,
            "--child",
            "--seed",
            str(self.args.seed),
            "--start",
            str(self.next),
            "--step",
            str(self.args.jobs),
            "--stop",
            str(self.args.cases),
            "--folder",
            str(work),
            "--log",
            str(self.log),
            "--memory-mib",
            str(self.args.memory_mib),
        ]
        self.process = subprocess.Popen(
            command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.running, self.since = None, time.monotonic()
        return True

    def collect(self) -> None:
        lines, self.offset = _read_log(self.log, self.offset)
        for line in lines:
            if line.startswith("S "):
                self.running, self.since = int(line[2:]), time.monotonic()
            elif line.strip():
                record = json.loads(line)
                self.records.append(record)
                self.running = None
                self.next = int(record["i"]) + self.args.jobs

    def _charge(self, outcome: str, detail: str) -> None:
        index = self.running if self.running is not None else self.next
        small, real = sources()
        with tempfile.TemporaryDirectory() as scratch:  # rebuild the case only to name its class
            try:
                name, source, what, _ = make_case(self.args.seed, index, Path(scratch), small, real)
            except Exception:  # noqa: BLE001  (naming the class only)
                name, source, what = "?", "?", "?"
        self.records.append(
            {"i": index, "cls": name, "source": source, "what": what, "outcome": outcome, "codes": [], "detail": detail}
        )
        self.next = index + self.args.jobs

    def poll(self) -> bool:
        """Advance; False once this slot has no more cases."""
        if self.process is None:
            return False
        self.collect()
        status = self.process.poll()
        if status is None:
            if self.running is not None and time.monotonic() - self.since > self.args.hang_s:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
                self.collect()
                self._charge("hang", f"no answer after {self.args.hang_s:g} s")
                return self.start()
            return True
        self.collect()
        try:  # the child's session: its decoder workers and fork server go with it
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if status == 0:
            return self.start()
        name = signal.Signals(-status).name if status < 0 else f"exit status {status}"
        self._charge("death", name)
        return self.start()


def supervise(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``args.cases`` cases in ``args.jobs`` children; returns the summary."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pneumoview-fuzz-") as scratch:
        slots = [_Slot(n, args, Path(scratch)) for n in range(args.jobs)]
        active = [s for s in slots if s.start()]
        while active:
            time.sleep(0.2)
            active = [s for s in active if s.poll()]
        records = [r for s in slots for r in s.records]
    return summarise(records, time.monotonic() - started)


OUTCOMES = ("ok", "error", "traceback", "death", "hang", "memory")


def summarise(records: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    per_class: dict[str, Counter[str]] = defaultdict(Counter)
    codes: Counter[str] = Counter()
    failures: list[dict[str, Any]] = []
    for record in records:
        if "skipped" in record:
            per_class["(not writable)"]["skipped"] += 1
            continue
        per_class[record["cls"]][record["outcome"]] += 1
        codes.update(record.get("codes", []))
        if record["outcome"] in ("traceback", "death", "hang", "memory"):
            failures.append(record)
    totals = Counter[str]()
    for counter in per_class.values():
        totals.update(counter)
    return {
        "cases": len(records),
        "seconds": round(seconds, 1),
        "totals": dict(totals),
        "classes": {k: dict(v) for k, v in sorted(per_class.items())},
        "codes": dict(codes.most_common(20)),
        "failures": failures,
    }


def print_table(summary: dict[str, Any]) -> None:
    print(f"{'class':<18}" + "".join(f"{o:>10}" for o in OUTCOMES))
    for name, counts in summary["classes"].items():
        print(f"{name:<18}" + "".join(f"{counts.get(o, 0):>10}" for o in OUTCOMES))
    totals = summary["totals"]
    print(f"{'TOTAL':<18}" + "".join(f"{totals.get(o, 0):>10}" for o in OUTCOMES))
    print(f"reason codes: {summary['codes']}")
    for failure in summary["failures"][:15]:
        print(
            f"  {failure['outcome']}: case {failure['i']} {failure['cls']} {failure['source']} / "
            f"{failure['what'][:60]}: {failure.get('detail', '')[:160]}"
        )
    deaths, hangs = totals.get("death", 0), totals.get("hang", 0)
    print(
        f"cases={summary['cases']} seconds={summary['seconds']} deaths={deaths} hangs={hangs} "
        f"tracebacks={totals.get('traceback', 0)} memory={totals.get('memory', 0)}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--hang-s", type=float, default=120.0)
    parser.add_argument("--memory-mib", type=float, default=768.0)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON (last line)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--step", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--stop", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--log", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args.seed, args.start, args.step, args.stop, args.folder, args.log, args.memory_mib)
        return 0
    summary = supervise(args)
    print_table(summary)
    if args.json:  # the first 50 failures, without their tracebacks
        brief = [{k: v for k, v in f.items() if k != "where"} for f in summary["failures"][:50]]
        print(json.dumps({**summary, "failures": brief}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env bash
# Build the one-folder PneumoView app with PyInstaller, then smoke-start it offscreen.
#
#   scripts/build_app.sh              build into dist/PneumoView and test it
#   SKIP_BUILD=1 scripts/build_app.sh only re-run the smoke tests on an existing build
#
# Environment: PYTHON (default .venv/bin/python), NICE (default 10), DIST / WORK (output and
# scratch folders, default dist/ and build/pyinstaller), SMOKE_TIMEOUT (seconds, default 300).
# Prints the build time, the folder's size and file count, its largest parts, and one line per
# smoke check (start, models, scan + analyse real DICOM, a quick demo training, the retraining
# wizard's training child and the window's analysis worker, all inside the built app); exits non-zero if the build or a check fails. It takes minutes (torch + PySide6),
# so CI runs it only on demand, not with the test suite.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
NICE="${NICE:-10}"
DIST="${DIST:-$ROOT/dist}"
WORK="${WORK:-$ROOT/build/pyinstaller}"
SMOKE_TIMEOUT="${SMOKE_TIMEOUT:-300}"
APP_DIR="$DIST/PneumoView"
EXE="$APP_DIR/pneumoview"

if [[ "${SKIP_BUILD:-0}" != "1" ]]; then
    if ! "$PYTHON" -m PyInstaller --version >/dev/null 2>&1; then
        echo "PyInstaller is missing: $PYTHON -m pip install -e '.[package]'" >&2
        exit 2
    fi
    echo "== building with PyInstaller $("$PYTHON" -m PyInstaller --version) (nice $NICE)"
    start=$(date +%s)
    nice -n "$NICE" "$PYTHON" -m PyInstaller --noconfirm --clean --log-level WARN \
        --distpath "$DIST" --workpath "$WORK" pneumoview.spec
    end=$(date +%s)
    build_seconds=$((end - start))
    printf 'build time: %dm%02ds\n' $((build_seconds / 60)) $((build_seconds % 60))
fi

[[ -x "$EXE" ]] || { echo "no executable at $EXE" >&2; exit 1; }
echo "size: $(du -sh "$APP_DIR" | cut -f1) in $(find "$APP_DIR" -type f | wc -l) files ($APP_DIR)"
echo "largest parts:"
{ du -s "$APP_DIR"/_internal/* 2>/dev/null | sort -rn | head -8 | \
    awk '{ printf "  %7.0f MB  %s\n", $1 / 1024, $2 }'; } || true  # head closing the pipe is fine

# ---------------------------------------------------------------- smoke checks
home="$(mktemp -d)"
trap 'rm -rf "$home"' EXIT
export PNEUMOVIEW_HOME="$home" QT_QPA_PLATFORM=offscreen
failures=0
check() {  # check NAME COMMAND...: run with a timeout, print ok/FAILED and the time it took
    local name="$1"; shift
    local t0 t1 status=0 output
    t0=$(date +%s.%N)
    if declare -F "$1" >/dev/null; then  # a shell function below: it applies the timeout itself
        output="$("$@" 2>&1)" || status=$?
    else
        output="$(timeout "$SMOKE_TIMEOUT" "$@" 2>&1)" || status=$?
    fi
    t1=$(date +%s.%N)
    if [[ $status -eq 0 ]]; then
        printf 'smoke %-22s ok      (%.1f s)  %s\n' "$name" "$(echo "$t1 - $t0" | bc)" "$(echo "$output" | tail -1)"
    else
        printf 'smoke %-22s FAILED  (exit %d)\n' "$name" "$status"
        echo "$output" | tail -20 | sed 's/^/    /'
        failures=$((failures + 1))
    fi
}

check "--version" "$EXE" --version
if "$EXE" gui --help 2>/dev/null | grep -q -- "--smoke-test"; then
    check "window (--smoke-test)" "$EXE" --smoke-test
else
    echo "smoke window: this build has no --smoke-test; --version was the only start check"
fi
check "models list" "$EXE" models list
RG1_DIR="${PNEUMOVIEW_SHARED:-$ROOT/../shared}/data/cxr-dicom"
if [[ -f "$RG1_DIR/RG1_UNCR.dcm" && -f "$RG1_DIR/RG1_J2KR.dcm" ]]; then
    # Real chest CR, uncompressed and JPEG 2000: the scan reads headers; analyze --demo decodes
    # the pixels (pylibjpeg plugins), finds the lungs and runs the tiny demo PneumoLLM (torch,
    # open_clip, transformers) inside the frozen app.
    check "scan (real DICOM)" "$EXE" scan "$RG1_DIR/RG1_UNCR.dcm" "$RG1_DIR/RG1_J2KR.dcm"
    check "analyze --demo" "$EXE" analyze --demo -q --csv "$home/demo.csv" "$RG1_DIR/RG1_UNCR.dcm" "$RG1_DIR/RG1_J2KR.dcm"
    [[ -f "$home/demo.csv" ]] && sed 's/^/    /' "$home/demo.csv" | cut -c1-160
    check "analyze --demo int8" "$EXE" analyze --demo -q --quantisation int8 --csv "$home/demo-int8.csv" "$RG1_DIR/RG1_UNCR.dcm"
fi
# The int8 plan's own CPU kernel (an optional C extension): where the build's Python has it, the app must.
int8_kernel() {
    if ! PYTHONPATH="$ROOT" "$PYTHON" -c "import pneumoview.inference._int8_cpu" 2>/dev/null; then
        echo "not built for this Python (no C compiler at install?): the app runs torch._weight_int8pack_mm"
        return 0
    fi
    find "$APP_DIR/_internal" -name '_int8_cpu*' | grep -q . && echo "bundled"
}
check "int8 kernel" int8_kernel


# Training inside the frozen app (the pipeline fingerprint must not need .py files). Synthetic
# labelled pictures are written with the build's Python; everything else runs in the built app.
TRAIN_DATA="$home/train-data"
PYTHONPATH="$ROOT" "$PYTHON" -c "import sys; from pathlib import Path; from training.synthetic import \
make_synthetic_dataset as m; m(Path(sys.argv[1]), n_patients=6, images_per_patient=1, seed=1)" "$TRAIN_DATA"
TRAIN_ARGS=("$TRAIN_DATA/labels.csv" --demo --preset quick --folds 2 --epochs 1 --batch-size 4 --grad-accum 1 --threads 2)
check "train --demo (quick)" "$EXE" train "${TRAIN_ARGS[@]}" --no-register --out "$home/trained-cli"
# The wizard's training child is '<app> train ... --json-progress' (pneumoview.service.training.child_command):
# the data check, then a run; each must end with its final message on stdout.
wizard_child() {
    timeout "$SMOKE_TIMEOUT" "$EXE" train "${TRAIN_ARGS[@]}" --validate-only --json-progress |
        grep '"event": "data_summary"' >/dev/null &&
    timeout "$SMOKE_TIMEOUT" "$EXE" train "${TRAIN_ARGS[@]}" --out "$home/trained-wizard" --json-progress |
        tail -1 | grep '"event": "done"' | cut -c1-120
}
check "wizard training child" wizard_child
# The analysis worker the window starts ('<app> gui --analysis-worker', JSON lines on stdin/stdout).
analysis_worker() {
    local image="${RG1_DIR}/RG1_UNCR.dcm" request
    [[ -f "$image" ]] || image="$(ls "$TRAIN_DATA"/images/*.png | head -1)"
    # The request as the window builds it: a WorkItem (key, path, SOP Instance UID, content SHA-256).
    request="$(PYTHONPATH="$ROOT" "$PYTHON" -c "import json, sys
from dataclasses import asdict
import pydicom
from pneumoview.results import identify
from pneumoview.service.analysis import WorkItem
path = sys.argv[1]
uid = str(pydicom.dcmread(path, stop_before_pixels=True).get('SOPInstanceUID', '')) if path.endswith('.dcm') else ''
item = asdict(WorkItem.for_identity('k1', identify(path, uid)))
print(json.dumps({'cmd': 'analyse', 'engine': {'kind': 'demo'}, 'threshold': 0.5, 'batch_size': 8, 'items': [item]}))" "$image")"
    printf '%s\n%s\n' "$request" '{"cmd": "quit"}' |
        timeout "$SMOKE_TIMEOUT" "$EXE" gui --analysis-worker | grep '"event": "done"' | cut -c1-120
}
check "analysis worker" analysis_worker

if [[ $failures -ne 0 ]]; then
    echo "$failures smoke check(s) failed" >&2
    exit 1
fi
echo "all smoke checks passed"

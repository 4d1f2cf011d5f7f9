#!/usr/bin/env bash
# Build the one-folder PneumoView app with PyInstaller, then smoke-start it offscreen.
#
#   scripts/build_app.sh              build into dist/PneumoView and test it
#   SKIP_BUILD=1 scripts/build_app.sh only re-run the smoke tests on an existing build
#
# Environment: PYTHON (default .venv/bin/python), NICE (default 10), DIST / WORK (output and
# scratch folders, default dist/ and build/pyinstaller), SMOKE_TIMEOUT (seconds, default 300).
# Prints the build time, the folder's size and file count, its largest parts, and one line per
# smoke check; exits non-zero if the build or a check fails. It takes minutes (torch + PySide6),
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

if ! "$PYTHON" -m PyInstaller --version >/dev/null 2>&1; then
    echo "PyInstaller is missing: $PYTHON -m pip install -e '.[package]'" >&2
    exit 2
fi

if [[ "${SKIP_BUILD:-0}" != "1" ]]; then
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
    output="$(timeout "$SMOKE_TIMEOUT" "$@" 2>&1)" || status=$?
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
fi

if [[ $failures -ne 0 ]]; then
    echo "$failures smoke check(s) failed" >&2
    exit 1
fi
echo "all smoke checks passed"

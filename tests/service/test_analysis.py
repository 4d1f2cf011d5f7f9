"""The analysis worker process and its message schema, with the real demo model and real files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pneumoview.errors import BundleError, FingerprintMismatchError, PneumoViewError
from pneumoview.results import ANALYSED, FAILED, REASON_NON_FINITE, ImageResult, identify
from pneumoview.service.analysis import (
    AnalysisClient,
    EngineSpec,
    ResultItem,
    WorkItem,
    analyse_request,
    decode_event,
    error_from_event,
)
from pneumoview.service.analysis_worker import engine_provenance, predict_results

pytestmark = pytest.mark.timeout(300)


def test_error_events_become_the_right_exception() -> None:
    err = error_from_event(
        {"event": "error", "type": "FingerprintMismatchError", "reason": "clip differs", "path": "/x/clip.pt"}
    )
    assert isinstance(err, FingerprintMismatchError) and isinstance(err, BundleError)
    assert err.reason == "clip differs" and err.path == Path("/x/clip.pt")
    assert type(error_from_event({"event": "error", "type": "NoSuchError", "reason": "?"})) is PneumoViewError


def test_events_are_checked_against_the_schema(rg1_uncompressed: Path) -> None:
    assert decode_event("libraries sometimes print this") is None
    assert decode_event('{"event": "unheard-of"}') is None
    identity = identify(rg1_uncompressed, "1.2.3")
    from pneumoview.results import failed

    result = failed(identity, "pixel-decode-error", "cut short")
    event = decode_event('{"event": "results", "items": [{"key": "k", "result": ' + result.to_json() + "}]}")
    assert event is not None and event["items"] == [ResultItem("k", result)]
    with pytest.raises(ValueError):
        decode_event('{"event": "results", "items": [{"key": "k", "result": {"status": "analysed"}}]}')
    request = analyse_request(EngineSpec("demo"), [WorkItem.for_identity("k", identity)], threshold=0.4)
    assert request["items"][0]["content_sha256"] == identity.content_sha256 and request["threshold"] == 0.4
    with pytest.raises(ValueError):
        EngineSpec("mystery")


@pytest.fixture(scope="module")
def demo_engine(tmp_path_factory: pytest.TempPathFactory):
    from pneumoview.inference.engine import InferenceEngine

    return InferenceEngine.load_demo(tmp_path_factory.mktemp("demo"))


@pytest.mark.slow
def test_a_non_finite_model_output_is_a_failure_never_a_label(demo_engine, rg1_uncompressed: Path) -> None:
    """Issue 8 item 5: NaN weights made analyze write probability nan, label normal, status analysed."""
    identity = identify(rg1_uncompressed, "1.2.3")
    model_input = demo_engine.prepare(rg1_uncompressed)
    provenance = engine_provenance(demo_engine, 0.5)
    (good,) = predict_results(demo_engine, [(identity, model_input)], provenance)
    assert good.status == ANALYSED and good.provenance.crop_box is not None
    assert good.provenance.bundle_fingerprint == demo_engine.manifest.weights_sha256
    assert good.provenance.base_fingerprints and good.provenance.preprocessing["image_size"] == 224
    weight = next(p for name, p in demo_engine.model.named_parameters() if name.startswith("head"))
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.fill_(float("nan"))
        (bad,) = predict_results(demo_engine, [(identity, model_input)], provenance)
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    assert bad.status == FAILED and bad.reason_code == REASON_NON_FINITE
    assert bad.probability is None and bad.label == "" and ImageResult.from_json(bad.to_json()) == bad


@pytest.mark.slow
def test_child_analyses_sends_results_as_json_and_keeps_the_model_warm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rg1_uncompressed: Path
) -> None:
    monkeypatch.setenv("PNEUMOVIEW_HOME", str(tmp_path / "home"))
    missing = tmp_path / "gone.dcm"
    missing.write_bytes(b"DICM? no")
    rg1 = identify(rg1_uncompressed, "1.2.3")
    gone = identify(missing, "")
    missing.unlink()  # hashed while it existed, gone when the child prepares it
    client = AnalysisClient()
    try:
        events: list[dict] = []
        items = [WorkItem.for_identity("rg1", rg1), WorkItem.for_identity("gone", gone)]
        request = analyse_request(EngineSpec("demo"), items, threshold=0.5, batch_size=4)
        final = client.request(EngineSpec("demo"), request, events.append)
        kinds = [e["event"] for e in events]
        assert final == {"event": "done", "count": 2}
        assert kinds[:2] == ["loading", "loaded"] and "progress" in kinds
        results = {i.key: i.result for i in next(e for e in events if e["event"] == "results")["items"]}
        r = results["rg1"]
        assert r.status == ANALYSED and 0.0 <= r.probability <= 1.0 and r.demo is True and r.image == rg1
        assert r.label == ("pneumoconiosis" if r.probability >= 0.5 else "normal")
        # The quality gate ran in the child before the model: RG1 states no pixel spacing (a caution only).
        assert r.quality_codes == ("pixel-spacing-unknown",) and r.below_quality_gate is False
        x0, y0, x1, y1 = r.provenance.crop_box
        assert 0 <= x0 < x1 <= 1841 and 0 <= y0 < y1 <= 1955
        assert results["gone"].status == FAILED and results["gone"].reason  # a per-image failure, not an abort
        assert client.loaded["demo"] is True and client.loaded["plan"]
        pid = client.pid
        # Second request: same process, engine already loaded (no "loading" event).
        again: list[dict] = []
        client.request(EngineSpec("demo"), {**request, "items": request["items"][:1]}, again.append)
        assert client.pid == pid and "loading" not in [e["event"] for e in again]
        same = next(e for e in again if e["event"] == "results")["items"][0].result
        assert same.probability == pytest.approx(r.probability, abs=1e-6)
        # Cancel: a long request stops after the batch in progress; the process stays usable.
        many = analyse_request(
            EngineSpec("demo"), [WorkItem.for_identity(f"k{i}", rg1) for i in range(40)], threshold=0.5, batch_size=1
        )
        seen: list[dict] = []

        def cancel_after_first(event: dict) -> None:
            seen.append(event)
            if event["event"] == "results":
                client.cancel()

        stopped = client.request(EngineSpec("demo"), many, cancel_after_first)
        assert stopped == {"event": "cancelled"}
        assert sum(e["event"] == "results" for e in seen) < 40
        # A bundle that does not exist: a BundleError comes back, and the process keeps serving.
        bad = client.request(
            EngineSpec("bundle", bundle=str(tmp_path / "nope"), clip_path=str(missing), llama_path=str(missing)),
            {"cmd": "validate"},
            lambda e: None,
        )
        assert bad["event"] == "error"
        assert isinstance(error_from_event(bad), PneumoViewError)
        assert client.running
    finally:
        client.close()
    assert not client.running


@pytest.mark.slow
def test_the_quality_gate_marks_results_and_its_codes_survive_a_store_restart(
    demo_engine, rg1_uncompressed: Path, tmp_path: Path
) -> None:
    """Issue 11 item 6: real RG1 and pydicom edits of it -> gate codes in the result, the store (after
    reopening it) and the CSV row; results below the gate are kept and marked, never dropped."""
    from quality_support import quality_edits

    from pneumoview.dicom.quality import thresholds_from
    from pneumoview.dicom.scan import read_record
    from pneumoview.report import export_csv
    from pneumoview.store import ImageInfo, ResultStore

    files = quality_edits(tmp_path / "edits", rg1_uncompressed)
    del files["lateral.dcm"]  # not analysed at all (suitability: lateral-view); see test_cli_analyze
    batch = [(identify(p, read_record(p).sop_instance_uid), demo_engine.prepare(p)) for p in files.values()]
    provenance = engine_provenance(demo_engine, 0.5)
    results = predict_results(demo_engine, batch, provenance, thresholds_from({}))
    expected = {
        "rg1.dcm": (("pixel-spacing-unknown",), False),
        "coarse.dcm": (("pixel-spacing-coarse",), True),  # PixelSpacing (0028,0030) 1.5 mm
        "ap.dcm": (("pixel-spacing-unknown", "ap-view"), False),  # a caution, not below the gate
        "cut.dcm": (("pixel-spacing-unknown", "lungs-cut-off"), True),  # apices at the top edge
    }
    got = {Path(r.image.path).name: (r.quality_codes, r.below_quality_gate) for r in results}
    assert got == expected
    assert all(r.status == ANALYSED for r in results)  # below the gate: analysed all the same
    db = tmp_path / "results.db"
    with ResultStore(db) as store:
        for (identity, _mi), result in zip(batch, results, strict=True):
            store.save(result, ImageInfo.from_record(read_record(identity.path), identity))
    with ResultStore(db) as store:  # a restart: everything read back from the file
        states = store.states([identity.key for identity, _mi in batch])
        stored = {
            Path(s.result.image.path).name: (s.result.quality_codes, s.result.below_quality_gate)
            for s in states.values()
        }
        assert stored == expected
        export_csv(tmp_path / "report.csv", store.report_rows())
    import csv

    with (tmp_path / "report.csv").open(encoding="utf-8-sig", newline="") as handle:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(handle)}
    for name, (codes, below) in expected.items():
        assert rows[name]["quality_codes"] == ";".join(codes)
        assert rows[name]["below_quality_gate"] == ("yes" if below else "no")
        assert rows[name]["status"] == "analysed" and rows[name]["probability"]

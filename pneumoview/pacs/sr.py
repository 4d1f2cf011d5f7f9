"""The model's result for one radiograph as a DICOM Comprehensive SR following TID 1500 (highdicom).

Content tree (PS3.16 TID 1500 "Measurement Report" -> TID 1501 "Measurement and Qualitative
Evaluation Group"):

* observation context: the device observer is the model (name, version = model id);
* procedure reported: SCT 399208008 "Plain chest X-ray";
* one group, its source image the analysed radiograph (SOP Class / Instance UID), its algorithm
  identification the model name, version and the bundle fingerprint / threshold as parameters:
  - qualitative evaluation SCT 40122008 "Pneumoconiosis" = SCT 52101004 "Present" or SCT 2667000
    "Absent" (the finding at the operating point);
  - measurement "Probability of pneumoconiosis" (unit UCUM ``1``) and "Operating point threshold";
  - for the demo model, a qualitative evaluation "Model state" = "DEMO - not a diagnosis".

Private concepts use the local coding scheme :data:`CODING_SCHEME` (PS3.3 8.1: designators
beginning with ``99`` are local). Patient and study identity come from the source header, never
invented (highdicom copies them from the evidence).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from pneumoview.labels import DEMO_MARK
from pneumoview.pacs.uids import derived_uid
from pneumoview.results import ImageResult

#: Local coding scheme of PneumoView's own concepts.
CODING_SCHEME = "99PNEUMOVIEW"
MANUFACTURER = "PneumoView"
CHEST_XRAY = Code("399208008", "SCT", "Plain chest X-ray")
PNEUMOCONIOSIS = Code("40122008", "SCT", "Pneumoconiosis")
PRESENT = Code("52101004", "SCT", "Present")
ABSENT = Code("2667000", "SCT", "Absent")
PROBABILITY = Code("P-0001", CODING_SCHEME, "Probability of pneumoconiosis")
THRESHOLD = Code("P-0002", CODING_SCHEME, "Operating point threshold")
MODEL_STATE = Code("P-0003", CODING_SCHEME, "Model state")
DEMO_STATE = Code("P-0004", CODING_SCHEME, DEMO_MARK)
READER_DECISION = Code("P-0010", CODING_SCHEME, "Reader decision on the AI result")
#: labels.DECISIONS -> coded values of READER_DECISION.
DECISION_CODES = {
    "agree": Code("P-0011", CODING_SCHEME, "Agrees with the AI result"),
    "disagree": Code("P-0012", CODING_SCHEME, "Disagrees with the AI result"),
    "uncertain": Code("P-0013", CODING_SCHEME, "Uncertain"),
}
NO_UNITS = Code("1", "UCUM", "no units")
#: Series number of PneumoView's derived series (SR; the Secondary Capture uses the next one).
SR_SERIES_NUMBER = 9901


@dataclass(frozen=True)
class ModelResult:
    """Plain values of one analysed image, as the writers need them (no torch, no result type)."""

    probability: float  # P(pneumoconiosis) in [0, 1]
    threshold: float  # operating point: positive when probability >= threshold
    label: str  # class at the threshold, as shown (may carry the demo mark)
    class_names: tuple[str, ...] = ("pneumoconiosis", "normal")
    model_name: str = ""
    model_version: str = ""  # the bundle's model id
    bundle_fingerprint: str = ""  # SHA-256 of the bundle's weights file
    demo: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)
    quality_codes: tuple[str, ...] = ()  # the image-quality gate's codes (pneumoview.dicom.quality)
    below_quality_gate: bool | None = None  # None: not graded

    @property
    def positive(self) -> bool:
        return self.probability >= self.threshold

    @classmethod
    def of(cls, result: ImageResult) -> ModelResult:
        """The writers' view of an analysed :class:`pneumoview.results.ImageResult`."""
        if result.probability is None or result.threshold is None:
            raise ValueError(f"{result.image.path}: not analysed ({result.reason_code or result.status})")
        prov = result.provenance
        return cls(
            probability=result.probability,
            threshold=result.threshold,
            label=result.label,
            class_names=result.class_names,
            model_name=prov.bundle_name,
            model_version=prov.bundle_id,
            bundle_fingerprint=prov.bundle_fingerprint,
            demo=result.demo,
            notes=result.notes,
            quality_codes=result.quality_codes,
            below_quality_gate=result.below_quality_gate,
        )

    def check(self) -> None:
        """ValueError for a non-finite or out-of-range probability / threshold."""
        import math

        for name, value in (("probability", self.probability), ("threshold", self.threshold)):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a finite number in [0, 1], not {value!r}")


#: Type 2 Patient / General Study attributes (PS3.3 C.7.1.1, C.7.2.1) copied into derived objects.
IDENTITY_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def with_identity(source: Dataset) -> Dataset:
    """A copy of ``source``'s header where absent Type 2 identity attributes are present but empty.

    Empty means "unknown" (PS3.5 7.4.5): nothing is invented, and highdicom can copy the identity.
    """
    import copy

    header = copy.copy(source)
    for keyword in IDENTITY_TYPE2:
        if keyword not in header:
            setattr(header, keyword, None)
    return header


def build_sr(source: Dataset, result: ModelResult) -> Dataset:
    """The Comprehensive SR (TID 1500) for ``result`` on the image whose header is ``source``."""
    import highdicom as hd

    result.check()
    source = with_identity(source)
    name = result.model_name or "PneumoLLM"
    version = result.model_version or "unknown"
    # One "Algorithm Parameters" TEXT item (DCM 111002) per "name=value" string.
    texts = [f"threshold={result.threshold:.6f}"]
    if result.bundle_fingerprint:
        texts.append(f"bundle_sha256={result.bundle_fingerprint}")
    if result.demo:
        texts.append(f"state={DEMO_MARK}")
    if result.below_quality_gate is not None:
        texts.append(f"quality_gate={'below' if result.below_quality_gate else 'passed'}")
        texts.append(f"quality_codes={';'.join(result.quality_codes)}")
    algorithm = hd.sr.AlgorithmIdentification(name=name[:64], version=version[:64], parameters=texts)
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=derived_uid("device", name, version), name=name[:64], manufacturer_name=MANUFACTURER, model_name=name[:64]
    )
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.cid270.Device, observer_identifying_attributes=device
        )
    )
    evaluations = [hd.sr.QualitativeEvaluation(PNEUMOCONIOSIS, PRESENT if result.positive else ABSENT)]
    if result.demo:
        evaluations.append(hd.sr.QualitativeEvaluation(MODEL_STATE, DEMO_STATE))
    measurements = [
        hd.sr.Measurement(name=PROBABILITY, value=float(result.probability), unit=NO_UNITS, algorithm_id=algorithm),
        hd.sr.Measurement(name=THRESHOLD, value=float(result.threshold), unit=NO_UNITS),
    ]
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=derived_uid("tracking", source.SOPInstanceUID, result.bundle_fingerprint), identifier="pneumoconiosis"
        ),
        algorithm_id=algorithm,
        measurements=measurements,
        qualitative_evaluations=evaluations,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
    )
    report = hd.sr.MeasurementReport(
        observation_context=context, procedure_reported=CHEST_XRAY, imaging_measurements=[group]
    )
    sr = hd.sr.ComprehensiveSR(
        evidence=[source],
        content=report[0],
        series_instance_uid=derived_uid("sr-series", source.StudyInstanceUID, result.bundle_fingerprint),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=derived_uid("sr", source.SOPInstanceUID, result.bundle_fingerprint, f"{result.threshold:.6f}"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=_series_description("AI result", result.demo),
    )
    sr.CodingSchemeIdentificationSequence = [coding_scheme_item()]
    return sr


def coding_scheme_item() -> Dataset:
    """PS3.3 C.12.1 Coding Scheme Identification Sequence item declaring :data:`CODING_SCHEME`."""
    item = Dataset()
    item.CodingSchemeDesignator = CODING_SCHEME
    item.CodingSchemeName = "PneumoView local concepts"
    item.CodingSchemeResponsibleOrganization = "PneumoView project"
    return item


def build_decision_sr(source: Dataset, decision: str, result: ModelResult, reviewer: str = "") -> Dataset:
    """A reader's decision on the AI result as a TID 1500 SR: person observer ``reviewer`` (PN), a
    qualitative evaluation "Reader decision" (agree / disagree / uncertain) and the AI finding it was
    about; the free-text comment is never exported (it may carry identifiers)."""
    import highdicom as hd

    if decision not in DECISION_CODES:
        raise ValueError(f"decision must be one of {tuple(DECISION_CODES)}, not {decision!r}")
    result.check()
    source = with_identity(source)
    observer = hd.sr.PersonObserverIdentifyingAttributes(name=(reviewer or "Reader^Unknown").replace(" ", "^")[:64])
    context = hd.sr.ObservationContext(
        observer_person_context=hd.sr.ObserverContext(
            observer_type=codes.cid270.Person, observer_identifying_attributes=observer
        )
    )
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=derived_uid("decision-tracking", source.SOPInstanceUID, result.bundle_fingerprint),
            identifier="reader decision",
        ),
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(READER_DECISION, DECISION_CODES[decision]),
            hd.sr.QualitativeEvaluation(PNEUMOCONIOSIS, PRESENT if result.positive else ABSENT),
        ],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
    )
    report = hd.sr.MeasurementReport(
        observation_context=context, procedure_reported=CHEST_XRAY, imaging_measurements=[group]
    )
    sr = hd.sr.ComprehensiveSR(
        evidence=[source],
        content=report[0],
        series_instance_uid=derived_uid("decision-series", source.StudyInstanceUID),
        series_number=SR_SERIES_NUMBER + 2,
        sop_instance_uid=derived_uid("decision", source.SOPInstanceUID, result.bundle_fingerprint, decision, reviewer),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=_series_description("reader decision", result.demo),
    )
    sr.CodingSchemeIdentificationSequence = [coding_scheme_item()]
    return sr


def _series_description(what: str, demo: bool) -> str:
    text = f"PneumoView {what}"
    return f"{text} - {DEMO_MARK}"[:64] if demo else text


def read_sr(dataset: Dataset) -> dict[str, object]:
    """The values :func:`build_sr` wrote, read back from an SR dataset (for tests and round trips).

    Returns ``{"finding": "Present"|"Absent", "probability": float, "threshold": float, "demo": bool,
    "algorithm": str, "parameters": ["name=value", ...], "source_uids": [SOP Instance UIDs]}``.
    """
    sources: list[str] = []
    parameters: list[str] = []
    out: dict[str, object] = {"demo": False, "source_uids": sources, "parameters": parameters}

    def walk(items: object) -> None:
        for item in items or []:  # type: ignore[attr-defined]
            concept = item.ConceptNameCodeSequence[0] if "ConceptNameCodeSequence" in item else None
            value = concept.CodeValue if concept is not None else ""
            if item.ValueType == "CODE" and value == PNEUMOCONIOSIS.value:
                out["finding"] = item.ConceptCodeSequence[0].CodeMeaning
            elif item.ValueType == "CODE" and value == READER_DECISION.value:
                code = item.ConceptCodeSequence[0].CodeValue
                out["decision"] = next(k for k, c in DECISION_CODES.items() if c.value == code)
            elif item.ValueType == "CODE" and value == MODEL_STATE.value:
                out["demo"] = item.ConceptCodeSequence[0].CodeValue == DEMO_STATE.value
            elif item.ValueType == "NUM" and value in (PROBABILITY.value, THRESHOLD.value):
                number = float(item.MeasuredValueSequence[0].NumericValue)
                out["probability" if value == PROBABILITY.value else "threshold"] = number
            elif item.ValueType == "TEXT" and value == "111001":  # DCM "Algorithm Name"
                out["algorithm"] = item.TextValue
            elif item.ValueType == "TEXT" and value == "111002":  # DCM "Algorithm Parameters"
                parameters.append(str(item.TextValue))
            elif item.ValueType == "IMAGE":
                sources.append(str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID))
            walk(item.get("ContentSequence"))

    walk(dataset.get("ContentSequence"))
    return out

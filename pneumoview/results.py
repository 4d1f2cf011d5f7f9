"""The one result type: what PneumoView concluded about one image file, and from what (no torch, no Qt).

The analysis worker process, the review session, the results database, the CSV report and
``pneumoview analyze`` all pass :class:`ImageResult`; across the process boundary it travels as
its JSON (:meth:`ImageResult.to_json` / :meth:`ImageResult.from_json`, strict both ways).

Image identity (:class:`ImageIdentity`): an image is its SOP Instance UID (0008,0018) **plus** the
SHA-256 of the file's bytes; the path is only for display. Two files with one UID but other bytes
(a truncated copy, the JPEG 2000 twin of an uncompressed file) are two images, each with its own
result and decision; byte-identical copies are the same image. Files sharing a UID are flagged
with :data:`REASON_DUPLICATE_UID`.

Fail-safe output: a probability that is not a finite number in [0, 1] never becomes a label;
:func:`analysed` turns it into a per-image failure with reason :data:`REASON_NON_FINITE`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from pneumoview.labels import display_label

__all__ = [
    "ANALYSED",
    "FAILED",
    "NOT_ANALYSED",
    "REASON_DUPLICATE_UID",
    "REASON_NON_FINITE",
    "REVIEW_CURRENT",
    "REVIEW_NEEDED",
    "STATUSES",
    "UNREADABLE",
    "ImageIdentity",
    "ImageResult",
    "Provenance",
    "analysed",
    "display_path",
    "failed",
    "identify",
    "label_at",
    "review_status",
]

#: ``ImageResult.status`` values.
ANALYSED, NOT_ANALYSED, FAILED, UNREADABLE = "analysed", "not-analysed", "failed", "unreadable"
STATUSES = (ANALYSED, NOT_ANALYSED, FAILED, UNREADABLE)
#: The model gave NaN / infinity (or a value outside [0, 1]): no label is given.
REASON_NON_FINITE = "non-finite-output"
#: Another file carries the same SOP Instance UID (0008,0018) with other bytes.
REASON_DUPLICATE_UID = "duplicate-uid"
#: Version of the JSON form; :meth:`ImageResult.from_json` refuses any other but
#: :data:`OLDER_JSON_VERSIONS`. Version 2 added the image-quality gate's verdict.
JSON_VERSION = 2
#: Older versions still read (results stored before the quality gate: its verdict is unknown, None).
OLDER_JSON_VERSIONS = (1,)
#: The fields version 2 added (a version-1 result gets them as "gate not run").
_GATE_FIELDS = ("quality_codes", "below_quality_gate")


def display_path(path: str | os.PathLike[str]) -> str:
    """A path as valid UTF-8 text for display and the database: each byte of the file name that is
    not UTF-8 (kept by Python as a surrogate escape) is shown as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class ImageIdentity:
    """Which image: SOP Instance UID (0008,0018, empty for a non-DICOM picture) + SHA-256 of the
    file's bytes; ``path`` (as text, surrogate escapes kept) says where it was seen."""

    sop_instance_uid: str
    content_sha256: str
    path: str

    def __post_init__(self) -> None:
        digest = self.content_sha256  # empty only for records made before content hashes were kept
        if digest and (len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest)):
            raise ValueError(f"content_sha256 must be 64 lowercase hex digits, not {digest!r}")

    @property
    def key(self) -> str:
        """The database key: ``<uid>|<sha256>`` (``-|<sha256>`` without a UID)."""
        if not self.content_sha256:
            raise ValueError("an image without a content hash has no key")
        return f"{self.sop_instance_uid or '-'}|{self.content_sha256}"


def identify(path: str | os.PathLike[str], sop_instance_uid: str = "") -> ImageIdentity:
    """The identity of the file at ``path`` (reads the whole file once to hash it)."""
    from pneumoview.hashing import file_sha256

    return ImageIdentity(str(sop_instance_uid or ""), file_sha256(path), os.fspath(path))


@dataclass(frozen=True)
class Provenance:
    """Everything needed to say later how a result was made (the model, its operating point, the software,
    the preprocessing and where the lung crop was)."""

    bundle_id: str = ""  # the bundle manifest's model_id
    bundle_name: str = ""
    bundle_fingerprint: str = ""  # SHA-256 of the bundle's weights file (manifest weights_sha256)
    base_fingerprints: dict[str, str] = field(default_factory=dict)  # {"clip": sha256, "llama": sha256}
    operating_point_id: str = ""  # empty: the threshold was given directly (settings / CLI)
    threshold: float | None = None  # P(class_names[0]) at or above which the label is class_names[0]
    software_version: str = ""  # pneumoview.__version__
    preprocessing: dict[str, Any] = field(default_factory=dict)  # the manifest's image_size, margin, mean, std
    crop_box: tuple[int, int, int, int] | None = None  # lung rectangle x0, y0, x1, y1 (exclusive) in image pixels
    crop_fallback: bool = False  # no lungs found: the whole image was used
    device: str = ""  # e.g. "cpu", "cuda:0"
    plan: str = ""  # the engine's device / precision plan, one line

    @property
    def model_fingerprint(self) -> str:
        """First 16 hex digits of :attr:`bundle_fingerprint` (what tables show)."""
        return self.bundle_fingerprint[:16]


def label_at(probability: float, threshold: float, class_names: Sequence[str]) -> str:
    """The class at ``threshold``: ``class_names[0]`` (the positive class) when probability >= threshold."""
    return class_names[0] if probability >= threshold else class_names[1]


def _finite_unit(value: float | None) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0


@dataclass(frozen=True)
class ImageResult:
    """The outcome for one image file: a label at the operating threshold, or the reason there is none.

    ``status`` is one of :data:`STATUSES`; ``reason_code`` / ``reason`` say why an image was not
    analysed or failed (e.g. ``lateral-view``, :data:`REASON_NON_FINITE`). ``label`` is the plain
    class name (see :attr:`shown_label` for what to show); ``demo`` marks the random demo model.
    ``id`` is the database row once stored (None before).

    ``quality_codes`` are the image-quality gate's reason codes (:mod:`pneumoview.dicom.quality`,
    computed before the model ran) and ``below_quality_gate`` its verdict: True marks a result on
    an image below the gate (kept and shown, never dropped); None means the gate did not run
    (the image was not analysed, or the result predates the gate).
    """

    image: ImageIdentity
    status: str
    reason_code: str = ""
    reason: str = ""
    class_names: tuple[str, ...] = ()
    probability: float | None = None
    label: str = ""
    demo: bool = False
    provenance: Provenance = field(default_factory=Provenance)
    analysed_at: str = ""
    notes: tuple[str, ...] = ()
    quality_codes: tuple[str, ...] = ()
    below_quality_gate: bool | None = None
    id: int | None = None

    def __post_init__(self) -> None:
        if self.below_quality_gate is None and self.quality_codes:
            raise ValueError("quality codes without a quality-gate verdict")
        if any(not isinstance(c, str) or not c for c in self.quality_codes):
            raise ValueError(f"quality codes must be non-empty text, not {self.quality_codes!r}")
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {self.status!r}")
        if self.status == ANALYSED:
            if not _finite_unit(self.probability):
                raise ValueError(f"an analysed result needs a finite probability in [0, 1], not {self.probability!r}")
            threshold = self.provenance.threshold
            if not _finite_unit(threshold):
                raise ValueError(f"an analysed result needs a finite threshold in [0, 1], not {threshold!r}")
            if len(self.class_names) != 2 or self.label not in self.class_names:
                raise ValueError(f"label {self.label!r} is not one of the class names {self.class_names!r}")
            assert self.probability is not None and threshold is not None
            if self.label != label_at(self.probability, threshold, self.class_names):
                raise ValueError(f"label {self.label!r} is not the label of {self.probability} at {threshold}")
        else:
            if self.label or self.probability is not None:
                raise ValueError(f"a {self.status} result has no probability or label")
            if not self.reason_code:
                raise ValueError(f"a {self.status} result needs a reason code")

    # -- views ---------------------------------------------------------------------------------
    @property
    def key(self) -> str:
        return self.image.key

    @property
    def threshold(self) -> float | None:
        return self.provenance.threshold

    @property
    def is_analysed(self) -> bool:
        return self.status == ANALYSED

    @property
    def positive(self) -> bool:
        return self.is_analysed and bool(self.class_names) and self.label == self.class_names[0]

    @property
    def quality_text(self) -> str:
        """The gate's codes joined with ``;`` (the CSV cell); empty when none or not run."""
        return ";".join(self.quality_codes)

    @property
    def shown_label(self) -> str:
        """The label as shown and exported (``DEMO - not a diagnosis: <label>`` for the demo model)."""
        return display_label(self.label, demo=self.demo) if self.label else ""

    def label_at(self, threshold: float) -> str:
        """The label this probability would get at ``threshold`` ("" when there is no probability)."""
        if not self.is_analysed or self.probability is None:
            return ""
        return label_at(self.probability, threshold, self.class_names)

    def with_id(self, result_id: int) -> ImageResult:
        return replace(self, id=result_id)

    # -- JSON ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["version"] = JSON_VERSION
        return data

    def to_json(self) -> str:
        """One line of JSON (ASCII; a file name's surrogate escapes survive as ``\\udcXX``)."""
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> ImageResult:
        """Parse :meth:`to_json`'s output; ValueError on anything else (unknown or missing keys, wrong types)."""
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a result: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> ImageResult:
        data = dict(_mapping(data, "result"))
        version = data.pop("version", None)
        if version in OLDER_JSON_VERSIONS and type(version) is int:
            for name in _GATE_FIELDS:
                if name in data:
                    raise ValueError(f"result JSON version {version} has no {name}")
            data.update(quality_codes=[], below_quality_gate=None)
        elif version != JSON_VERSION or type(version) is not int:
            raise ValueError(f"result JSON version must be {JSON_VERSION}")
        _exact_keys(data, cls, "result")
        image = _mapping(data["image"], "image")
        _exact_keys(image, ImageIdentity, "image")
        prov = dict(_mapping(data["provenance"], "provenance"))
        _exact_keys(prov, Provenance, "provenance")
        box = prov["crop_box"]
        if box is not None:
            if not isinstance(box, list) or len(box) != 4 or not all(type(v) is int for v in box):
                raise ValueError("provenance.crop_box must be four integers or null")
            prov["crop_box"] = tuple(box)
        _typed(
            prov,
            {
                "bundle_id": str,
                "bundle_name": str,
                "bundle_fingerprint": str,
                "base_fingerprints": dict,
                "operating_point_id": str,
                "threshold": (float, int, type(None)),
                "software_version": str,
                "preprocessing": dict,
                "crop_fallback": bool,
                "device": str,
                "plan": str,
            },
            "provenance",
        )
        _typed(image, {"sop_instance_uid": str, "content_sha256": str, "path": str}, "image")
        _typed(
            data,
            {
                "status": str,
                "reason_code": str,
                "reason": str,
                "class_names": list,
                "probability": (float, int, type(None)),
                "label": str,
                "demo": bool,
                "analysed_at": str,
                "notes": list,
                "quality_codes": list,
                "below_quality_gate": (bool, type(None)),
                "id": (int, type(None)),
            },
            "result",
        )
        if not all(isinstance(v, str) for v in [*data["class_names"], *data["notes"], *data["quality_codes"]]):
            raise ValueError("result.class_names, result.notes and result.quality_codes must be lists of text")
        return cls(
            image=ImageIdentity(**image),
            provenance=Provenance(**prov),
            status=data["status"],
            reason_code=data["reason_code"],
            reason=data["reason"],
            class_names=tuple(data["class_names"]),
            probability=None if data["probability"] is None else float(data["probability"]),
            label=data["label"],
            demo=data["demo"],
            analysed_at=data["analysed_at"],
            notes=tuple(data["notes"]),
            quality_codes=tuple(data["quality_codes"]),
            below_quality_gate=data["below_quality_gate"],
            id=data["id"],
        )


def _refuse_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name} in a result")


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object")  # noqa: TRY004 - from_json raises ValueError only
    return value


def _exact_keys(data: Mapping[str, Any], cls: type, what: str) -> None:
    expected = {f.name for f in fields(cls)}
    missing, unknown = expected - set(data), set(data) - expected
    if missing or unknown:
        raise ValueError(f"{what}: missing {sorted(missing)}, unknown {sorted(unknown)}")


def _typed(data: Mapping[str, Any], types: Mapping[str, type | tuple[type, ...]], what: str) -> None:
    for name, kind in types.items():
        value = data[name]
        bad_bool = isinstance(value, bool) and kind is not bool and not (isinstance(kind, tuple) and bool in kind)
        if bad_bool or not isinstance(value, kind):
            raise ValueError(f"{what}.{name} has the wrong type ({type(value).__name__})")


# --------------------------------------------------------------------------- constructors
def analysed(
    image: ImageIdentity,
    probability: float,
    *,
    class_names: Sequence[str],
    demo: bool,
    provenance: Provenance,
    analysed_at: str = "",
    notes: Sequence[str] = (),
    quality_codes: Sequence[str] = (),
    below_quality_gate: bool | None = None,
) -> ImageResult:
    """The result for a model output: labelled at ``provenance.threshold``, or a failure with
    :data:`REASON_NON_FINITE` when the probability is NaN, infinite or outside [0, 1]. The
    quality gate's verdict (computed before the model ran) is kept either way."""
    from pneumoview.clock import utc_now

    codes = tuple(quality_codes)
    when = analysed_at or utc_now()
    value = float(probability)
    if not _finite_unit(value):
        return ImageResult(
            image=image,
            status=FAILED,
            reason_code=REASON_NON_FINITE,
            reason=f"the model's output is not a probability ({value!r}); no label is given",
            class_names=tuple(class_names),
            demo=demo,
            provenance=provenance,
            analysed_at=when,
            notes=tuple(notes),
            quality_codes=codes,
            below_quality_gate=below_quality_gate,
        )
    threshold = provenance.threshold
    if not _finite_unit(threshold):
        raise ValueError(f"threshold must be a finite number in [0, 1], not {threshold!r}")
    assert threshold is not None
    return ImageResult(
        image=image,
        status=ANALYSED,
        class_names=tuple(class_names),
        probability=value,
        label=label_at(value, threshold, class_names),
        demo=demo,
        provenance=provenance,
        analysed_at=when,
        notes=tuple(notes),
        quality_codes=codes,
        below_quality_gate=below_quality_gate,
    )


def failed(
    image: ImageIdentity,
    code: str,
    reason: str,
    *,
    status: str = FAILED,
    provenance: Provenance | None = None,
    demo: bool = False,
    notes: Sequence[str] = (),
) -> ImageResult:
    """A result without a label: ``status`` failed / not-analysed / unreadable with its reason."""
    from pneumoview.clock import utc_now

    return ImageResult(
        image=image,
        status=status,
        reason_code=code,
        reason=reason,
        demo=demo,
        provenance=provenance or Provenance(),
        analysed_at=utc_now(),
        notes=tuple(notes),
    )


#: ``review_status`` values (empty: no decision).
REVIEW_CURRENT, REVIEW_NEEDED = "current", "needs re-review"


def review_status(has_decision: bool, judged: ImageResult | None, current: ImageResult | None) -> str:
    """Whether a reviewer's decision still stands for the image's current result.

    The decision judged ``judged`` (None: it was made with no result). It needs re-review when a
    later ``current`` result comes from another model (bundle fingerprint or id) or has another
    status or label (e.g. a threshold that flips it); a decision made without a result needs
    re-review once there is one. Empty when there is no decision.
    """
    if not has_decision:
        return ""
    if current is None:
        return REVIEW_CURRENT
    if judged is None:
        return REVIEW_NEEDED
    if judged.id is not None and judged.id == current.id:
        return REVIEW_CURRENT
    same_model = (
        judged.provenance.bundle_fingerprint == current.provenance.bundle_fingerprint
        and judged.provenance.bundle_id == current.provenance.bundle_id
    )
    same_outcome = judged.status == current.status and judged.label == current.label
    return REVIEW_CURRENT if same_model and same_outcome else REVIEW_NEEDED

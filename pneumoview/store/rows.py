"""What the results database's rows become: :class:`ImageInfo`, :class:`Decision`, :class:`ImageState`,
:class:`AuditEvent` and :class:`~pneumoview.results.ImageResult`, and a stored image's CSV row.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pneumoview.clock import format_utc, utc_now
from pneumoview.errors import StoreError
from pneumoview.labels import plain_label
from pneumoview.report import ReportRow, header_text
from pneumoview.results import (
    ANALYSED,
    FAILED,
    NOT_ANALYSED,
    ImageIdentity,
    ImageResult,
    Provenance,
    display_path,
    review_status,
)
from pneumoview.store.schema import LEGACY_CLASS_NAMES

if TYPE_CHECKING:
    from pneumoview.dicom.scan import ImageRecord


def _timestamp(value: datetime | str | None) -> str:
    if value is None:
        return utc_now()
    if isinstance(value, datetime):
        try:
            return format_utc(value)
        except ValueError as exc:
            raise StoreError(str(exc)) from exc
    return value


@dataclass(frozen=True)
class ImageInfo:
    """The header fields the store keeps for an image (from a scan's ImageRecord) and its identity."""

    image_key: str
    path: str  # display form (:func:`pneumoview.results.display_path`)
    sop_instance_uid: str = ""
    patient_id: str = ""
    patient_name: str = ""
    study_uid: str = ""
    study_date: str = ""
    accession: str = ""
    view_position: str = ""
    series_uid: str = ""
    modality: str = ""
    body_part: str = ""
    content_sha256: str = ""
    file_stamp: str = ""  # size:mtime_ns:ctime_ns when the hash was computed (see ResultStore.known_hashes)

    @classmethod
    def from_record(cls, record: ImageRecord, identity: ImageIdentity, file_stamp: str = "") -> ImageInfo:
        """From a scan's ImageRecord and the file's :class:`~pneumoview.results.ImageIdentity`."""

        return cls(
            image_key=identity.key,
            path=display_path(Path(identity.path).absolute()),
            sop_instance_uid=identity.sop_instance_uid,
            **header_text(record),
            content_sha256=identity.content_sha256,
            file_stamp=file_stamp,
        )

    @property
    def identity(self) -> ImageIdentity:
        return ImageIdentity(self.sop_instance_uid, self.content_sha256, self.path)


@dataclass(frozen=True)
class Decision:
    id: int
    image_key: str
    decision: str  # one of labels.DECISIONS
    comment: str
    reviewer: str
    reviewed_at: str
    result_id: int | None  # the result the reviewer judged (None: decided without a result)


@dataclass(frozen=True)
class ImageState:
    """What the UI shows for an image: its latest result, latest decision and the result that decision judged."""

    image: ImageInfo
    result: ImageResult | None
    decision: Decision | None
    judged: ImageResult | None = None

    @property
    def review_status(self) -> str:
        """``""`` (no decision), ``current`` or ``needs re-review`` (:func:`pneumoview.results.review_status`)."""
        return review_status(self.decision is not None, self.judged, self.result)


@dataclass(frozen=True)
class AuditEvent:
    id: int
    at: str
    kind: str
    image_key: str | None
    actor: str
    detail: dict[str, Any]


def _from_row(cls: type, row: sqlite3.Row, **overrides: Any) -> Any:
    names = [f.name for f in fields(cls)]
    values = {n: row[n] for n in names if n not in overrides}
    return cls(**values, **overrides)


def _result(row: sqlite3.Row, image: sqlite3.Row | ImageInfo | None = None) -> ImageResult:
    """A results row -> ImageResult (its JSON; rows from before schema v3 are rebuilt from their columns)."""
    if row["result_json"]:
        return ImageResult.from_json(row["result_json"]).with_id(int(row["id"]))
    uid = (
        image["sop_instance_uid"]
        if image is not None and not isinstance(image, ImageInfo)
        else image.sop_instance_uid
        if image is not None
        else ""
    )
    path = (
        image["path"]
        if image is not None and not isinstance(image, ImageInfo)
        else image.path
        if image is not None
        else ""
    )
    identity = ImageIdentity(uid, "", path)
    provenance = Provenance(
        bundle_id=row["model_id"],
        bundle_name=row["model_name"],
        bundle_fingerprint=row["model_fingerprint"],
        threshold=row["threshold"],
        software_version=row["model_version"],
        device=row["device"],
        plan=row["plan"],
    )
    try:
        if row["unsupported_code"] or row["probability"] is None:
            return ImageResult(
                image=identity,
                status=NOT_ANALYSED,
                reason_code=row["unsupported_code"] or "unknown",
                reason=row["unsupported_reason"],
                demo=bool(row["demo"]),
                provenance=provenance,
                analysed_at=row["analysed_at"],
                id=int(row["id"]),
            )
        return ImageResult(
            image=identity,
            status=ANALYSED,
            class_names=LEGACY_CLASS_NAMES,
            probability=float(row["probability"]),
            label=plain_label(row["label"]),
            demo=bool(row["demo"]),
            provenance=provenance,
            analysed_at=row["analysed_at"],
            id=int(row["id"]),
        )
    except ValueError as exc:
        return ImageResult(
            image=identity,
            status=FAILED,
            reason_code="invalid-record",
            reason=f"a result recorded before schema v3 is inconsistent: {exc}",
            provenance=provenance,
            analysed_at=row["analysed_at"],
            id=int(row["id"]),
        )


def _decision(row: sqlite3.Row) -> Decision:
    return _from_row(Decision, row)


def _image(row: sqlite3.Row) -> ImageInfo:
    return _from_row(ImageInfo, row)


def report_row(state: ImageState, *, duplicates: Sequence[str] = ()) -> ReportRow:
    """A stored image's CSV row: its header fields, latest result, latest decision and review status."""
    info, decision = state.image, state.decision
    return ReportRow(
        path=info.path,
        result=state.result,
        patient_id=info.patient_id,
        patient_name=info.patient_name,
        study_uid=info.study_uid,
        accession=info.accession,
        study_date=info.study_date,
        series_uid=info.series_uid,
        sop_instance_uid=info.sop_instance_uid,
        content_sha256=info.content_sha256,
        modality=info.modality,
        view_position=info.view_position,
        body_part=info.body_part,
        decision=decision.decision if decision else "",
        comment=decision.comment if decision else "",
        reviewer=decision.reviewer if decision else "",
        reviewed_at=decision.reviewed_at if decision else "",
        review_status=state.review_status,
        duplicates=tuple(duplicates),
    )

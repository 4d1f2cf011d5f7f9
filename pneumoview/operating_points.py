"""Operating points: the threshold a site chose for one model bundle, bound to its fingerprint.

A model's score scale is its own (WHO's CAD guidance: a new software version needs a new
threshold), so an operating point is valid for exactly one bundle, identified by the SHA-256 of
its weights file (``Manifest.weights_sha256``). :func:`OperatingPointStore.threshold_for` answers
"which threshold for bundle X" and says when there is none: then the app asks the user to
calibrate or to confirm the default; it never reuses another bundle's threshold.

Stored as JSON (``operating_points.json`` in :func:`pneumoview.paths.data_dir`, written with
:mod:`pneumoview.atomic`), history kept: each bundle has a list of points and a current one. An
operating point holds no patient data: the data summary is counts and the data set's folder name.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pneumoview import paths
from pneumoview.atomic import atomic_write_text
from pneumoview.clock import utc_now
from pneumoview.errors import CalibrationError, ConfigError

FILE_NAME = "operating_points.json"
FORMAT_VERSION = 1
#: ``kind`` values.
CALIBRATED = "calibrated"  # chosen from a calibration on local labelled data
CONFIRMED_DEFAULT = "confirmed-default"  # the user confirmed a threshold without calibrating


def default_path() -> Path:
    return paths.data_dir() / FILE_NAME


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold for one bundle, who chose it, when, on what data and with which figures."""

    id: str
    bundle_fingerprint: str  # full hex SHA-256 of the bundle's weights file
    bundle_id: str  # the manifest's model_id (for people; the fingerprint is what binds)
    threshold: float
    kind: str
    created: str  # ISO 8601 UTC
    created_by: str = ""
    data_summary: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def new(
        cls,
        *,
        bundle_fingerprint: str,
        bundle_id: str,
        threshold: float,
        kind: str = CALIBRATED,
        created_by: str = "",
        data_summary: dict[str, Any] | None = None,
        figures: dict[str, Any] | None = None,
    ) -> OperatingPoint:
        point = cls(
            id=uuid.uuid4().hex,
            bundle_fingerprint=bundle_fingerprint,
            bundle_id=bundle_id,
            threshold=float(threshold),
            kind=kind,
            created=utc_now(),
            created_by=created_by,
            data_summary=dict(data_summary or {}),
            figures=dict(figures or {}),
        )
        point.validate()
        return point

    def validate(self) -> None:
        """Raise CalibrationError for a point that cannot be used."""
        if not isinstance(self.bundle_fingerprint, str) or len(self.bundle_fingerprint) < 16:
            raise CalibrationError("an operating point needs the bundle's weights fingerprint (SHA-256)")
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or not 0.0 < t < 1.0:
            raise CalibrationError(f"an operating point's threshold must be strictly between 0 and 1, not {t!r}")
        if self.kind not in (CALIBRATED, CONFIRMED_DEFAULT):
            raise CalibrationError(f"unknown operating point kind {self.kind!r}")

    @classmethod
    def from_dict(cls, data: Any) -> OperatingPoint:
        if not isinstance(data, dict):
            raise ConfigError("an operating point must be a JSON object")
        try:
            point = cls(
                id=str(data["id"]),
                bundle_fingerprint=str(data["bundle_fingerprint"]),
                bundle_id=str(data.get("bundle_id", "")),
                threshold=data["threshold"],
                kind=str(data["kind"]),
                created=str(data["created"]),
                created_by=str(data.get("created_by", "")),
                data_summary=dict(data.get("data_summary") or {}),
                figures=dict(data.get("figures") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed operating point: {exc}") from exc
        try:
            point.validate()
        except CalibrationError as exc:
            raise ConfigError(f"invalid operating point {point.id}: {exc.reason}") from exc
        return point

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ThresholdAnswer:
    """What :meth:`OperatingPointStore.threshold_for` found: a point, or none (ask the user)."""

    point: OperatingPoint | None

    @property
    def threshold(self) -> float | None:
        return None if self.point is None else self.point.threshold

    @property
    def needs_choice(self) -> bool:
        """True: no operating point for this bundle; calibrate or confirm the default first."""
        return self.point is None


class OperatingPointStore:
    """The operating points of every bundle, in one JSON file. Each call reads the file afresh."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()

    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"version": FORMAT_VERSION, "points": [], "current": {}}
        except OSError as exc:
            raise ConfigError(f"cannot read operating points: {exc.strerror or exc}", path=self.path) from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"operating points file is not valid JSON (line {exc.lineno})", path=self.path) from exc
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("points"), list)
            or not isinstance(data.get("current"), dict)
        ):
            raise ConfigError("operating points file has no 'points' list and 'current' map", path=self.path)
        if not isinstance(data.get("version"), int) or data["version"] > FORMAT_VERSION:
            raise ConfigError(
                f"operating points format {data.get('version')!r} is newer than this PneumoView", path=self.path
            )
        return data

    def _write(self, data: dict[str, Any]) -> None:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        except OSError as exc:
            raise ConfigError(f"cannot write operating points: {exc.strerror or exc}", path=self.path) from exc

    def points(self, bundle_fingerprint: str | None = None) -> list[OperatingPoint]:
        """Every point (oldest first), or those of one bundle."""
        out = [OperatingPoint.from_dict(p) for p in self._read()["points"]]
        if bundle_fingerprint is not None:
            out = [p for p in out if p.bundle_fingerprint == bundle_fingerprint]
        return out

    def save(self, point: OperatingPoint, *, make_current: bool = True) -> OperatingPoint:
        """Add ``point`` to the history and (by default) make it its bundle's current one."""
        point.validate()
        data = self._read()
        if any(isinstance(p, dict) and p.get("id") == point.id for p in data["points"]):
            raise CalibrationError(f"operating point {point.id} is already saved")
        data["points"].append(point.to_dict())
        if make_current:
            data["current"][point.bundle_fingerprint] = point.id
        data["version"] = FORMAT_VERSION
        self._write(data)
        return point

    def set_current(self, bundle_fingerprint: str, point_id: str) -> OperatingPoint:
        """Switch a bundle back to one of its earlier points."""
        for point in self.points(bundle_fingerprint):
            if point.id == point_id:
                data = self._read()
                data["current"][bundle_fingerprint] = point_id
                self._write(data)
                return point
        raise CalibrationError(f"no operating point {point_id!r} for this bundle")

    def threshold_for(self, bundle_fingerprint: str) -> ThresholdAnswer:
        """The current operating point of exactly this bundle, or an answer saying there is none.

        A point whose fingerprint differs (another bundle, another version of the same model) is
        never returned.
        """
        if not bundle_fingerprint:
            return ThresholdAnswer(None)
        data = self._read()
        current = data["current"].get(bundle_fingerprint)
        if current is None:
            return ThresholdAnswer(None)
        for raw in data["points"]:
            if isinstance(raw, dict) and raw.get("id") == current:
                point = OperatingPoint.from_dict(raw)
                if point.bundle_fingerprint != bundle_fingerprint:
                    raise ConfigError(f"operating point {current} belongs to another bundle", path=self.path)
                return ThresholdAnswer(point)
        raise ConfigError(f"current operating point {current} is missing from the file", path=self.path)

    def confirm_default(
        self, *, bundle_fingerprint: str, bundle_id: str, threshold: float, created_by: str = ""
    ) -> OperatingPoint:
        """Record that the user accepted ``threshold`` for this bundle without calibrating."""
        return self.save(
            OperatingPoint.new(
                bundle_fingerprint=bundle_fingerprint,
                bundle_id=bundle_id,
                threshold=threshold,
                kind=CONFIRMED_DEFAULT,
                created_by=created_by,
                data_summary={"note": "not calibrated on local data; threshold confirmed by the user"},
            )
        )

"""User settings: a dataclass stored as JSON in the platformdirs config folder (atomic writes).

``load_settings()`` returns defaults when there is no file yet; unknown keys written by a newer
PneumoView are kept and written back untouched, so a downgrade-upgrade cycle loses nothing.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pneumoview import paths
from pneumoview.atomic import atomic_write_text
from pneumoview.errors import ConfigError
from pneumoview.precision import Precision, Quantisation, choices, legacy_precision

SETTINGS_VERSION = 1
#: Values the device / precision / quantisation fields may take ("auto" lets the engine plan it):
#: the one vocabulary of :mod:`pneumoview.precision`.
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = tuple(choices(Precision))
QUANTISATIONS = tuple(choices(Quantisation))
CSV_DELIMITERS = (",", ";", "\t")
MAX_RECENT_FOLDERS = 10


@dataclass
class ExportOptions:
    """Defaults the export dialog starts from (the user confirms them per export)."""

    pseudonymise: bool = False
    include_names: bool = False  # patient names are opt-in
    include_source_path: bool = True  # dropped anyway when pseudonymising
    delimiter: str = ","  # ";" for Excel in locales with a decimal comma
    last_directory: str = ""


@dataclass
class Settings:
    """Everything PneumoView remembers between runs. Paths are strings (JSON-friendly)."""

    clip_path: str | None = None  # CLIP ViT-L/14 weights (file)
    llama_path: str | None = None  # LLaMA-7B weights (folder)
    active_bundle: str | None = None  # explicit bundle folder; None = the model registry's active bundle
    device: str = "auto"
    precision: str = "auto"
    quantisation: str = "auto"  # LLaMA linears: auto (8-bit when memory is short), none, int8, int4, nf4
    model_idle_minutes: int = 30  # the analysis worker releases a loaded model after this idle time; 0 = never
    threshold: float = 0.5  # probability of pneumoconiosis at or above which the label is positive
    reviewer_name: str = ""
    pseudonymise_key: str = ""  # hex; generated once by ensure_pseudonymise_key and kept
    recent_folders: list[str] = field(default_factory=list)
    export: ExportOptions = field(default_factory=ExportOptions)
    # PACS (pneumoview.pacs): our Storage SCP, and the PACS the browser queries ("HOST:PORT:AET" or a DICOMweb URL)
    pacs_ae_title: str = "PNEUMOVIEW"
    pacs_port: int = 11112
    pacs_interface: str = "127.0.0.1"  # loopback: only this machine can send; "0.0.0.0" opens it to the network
    pacs_allowed_callers: list[str] = field(default_factory=list)  # calling AE titles; empty: any
    pacs_listen_on_start: bool = False
    pacs_inbox: str = ""  # empty: <data folder>/inbox
    pacs_remote: str = ""
    pacs_send_automatically: bool = False  # send SR + SC of each new result / decision to pacs_remote
    # image-quality gate: overrides of pneumoview.dicom.quality.QualityThresholds by name
    quality: dict[str, float] = field(default_factory=dict)
    # monitoring: warn when a week's flagged fraction leaves expected +- band (expected None:
    # the flagged fraction of the first monitor_baseline_weeks weeks)
    monitor_band: float = 0.10
    monitor_expected_flagged: float | None = None
    monitor_baseline_weeks: int = 4
    # the clinic's own (licensed, never shipped) ILO standard radiographs, DICOM or PNG/JPEG/TIFF
    # (pneumoview.standards); empty: not set
    ilo_standards_folder: str = ""
    # ILO readings: the final-determination rule as pneumoview.reading.rules.FinalRule's JSON
    # ({"agree_on": "binary" | "major", "large_opacities": true | false}); empty: the default rule
    final_rule: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys from a newer version, kept as-is

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field."""
        if self.device not in DEVICES:
            raise ConfigError(f"settings: device must be one of {', '.join(DEVICES)}, not {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"settings: precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.quantisation not in QUANTISATIONS:
            raise ConfigError(
                f"settings: quantisation must be one of {', '.join(QUANTISATIONS)}, not {self.quantisation!r}"
            )
        if (
            isinstance(self.model_idle_minutes, bool)
            or not isinstance(self.model_idle_minutes, int)
            or self.model_idle_minutes < 0
        ):
            raise ConfigError("settings: model_idle_minutes must be a whole number of minutes, 0 or more")
        if (
            isinstance(self.threshold, bool)
            or not isinstance(self.threshold, (int, float))
            or not math.isfinite(self.threshold)
            or not 0.0 < self.threshold < 1.0
        ):
            raise ConfigError(f"settings: threshold must be a number strictly between 0 and 1, not {self.threshold!r}")
        if self.export.delimiter not in CSV_DELIMITERS:
            raise ConfigError(
                f"settings: export delimiter must be one of {CSV_DELIMITERS!r}, not {self.export.delimiter!r}"
            )
        if not 0 <= self.pacs_port <= 65535 or not 0 < len(self.pacs_ae_title.strip()) <= 16:
            raise ConfigError("settings: PACS port must be within 0-65535 and the AE title 1-16 characters")
        self._validate_gate_and_monitoring()
        if self.pseudonymise_key:
            try:
                bytes.fromhex(self.pseudonymise_key)
            except ValueError as exc:
                raise ConfigError("settings: pseudonymise_key is not hexadecimal") from exc

    def _validate_gate_and_monitoring(self) -> None:
        from pneumoview.dicom.quality import thresholds_from

        try:
            thresholds_from(self.quality)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"settings: quality: {exc}") from None
        for name, value in (
            ("monitor_band", self.monitor_band),
            ("monitor_expected_flagged", self.monitor_expected_flagged),
        ):
            if value is None and name == "monitor_expected_flagged":
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or not 0 <= value <= 1
            ):
                raise ConfigError(f"settings: {name} must be a fraction between 0 and 1, not {value!r}")
        if (
            isinstance(self.monitor_baseline_weeks, bool)
            or not isinstance(self.monitor_baseline_weeks, int)
            or self.monitor_baseline_weeks < 1
        ):
            raise ConfigError(
                f"settings: monitor_baseline_weeks must be a whole number >= 1, not {self.monitor_baseline_weeks!r}"
            )

    def add_recent_folder(self, folder: str | os.PathLike[str]) -> None:
        """Put ``folder`` first in ``recent_folders`` (no duplicates, at most MAX_RECENT_FOLDERS)."""
        text = str(folder)
        self.recent_folders = [text] + [f for f in self.recent_folders if f != text]
        del self.recent_folders[MAX_RECENT_FOLDERS:]

    def to_json_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        extra = data.pop("extra")
        return {"version": SETTINGS_VERSION, **extra, **data}


_FIELDS = {f.name: f for f in dataclasses.fields(Settings) if f.name != "extra"}
_EXPORT_FIELDS = {f.name for f in dataclasses.fields(ExportOptions)}
_TYPES: dict[str, tuple[type, ...]] = {
    "clip_path": (str, type(None)),
    "llama_path": (str, type(None)),
    "active_bundle": (str, type(None)),
    "device": (str,),
    "precision": (str,),
    "quantisation": (str,),
    "model_idle_minutes": (int,),
    "threshold": (int, float),
    "reviewer_name": (str,),
    "pseudonymise_key": (str,),
    "recent_folders": (list,),
    "pacs_ae_title": (str,),
    "pacs_port": (int,),
    "pacs_interface": (str,),
    "pacs_allowed_callers": (list,),
    "pacs_listen_on_start": (bool,),
    "pacs_inbox": (str,),
    "pacs_remote": (str,),
    "pacs_send_automatically": (bool,),
    "quality": (dict,),
    "monitor_band": (int, float),
    "monitor_expected_flagged": (int, float, type(None)),
    "monitor_baseline_weeks": (int,),
    "ilo_standards_folder": (str,),
    "final_rule": (dict,),
}


def settings_from_dict(data: dict[str, Any], *, source: Path | None = None) -> Settings:
    """Build Settings from parsed JSON; raises ConfigError for wrong types or values."""
    if not isinstance(data, dict):
        raise ConfigError("settings file must hold a JSON object", path=source)
    version = data.get("version", SETTINGS_VERSION)
    if not isinstance(version, int) or version < 1:
        raise ConfigError(f"settings: bad version {version!r}", path=source)
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in data.items():
        if key == "version":
            continue
        if key == "export":
            if not isinstance(value, dict):
                raise ConfigError("settings: 'export' must be an object", path=source)
            known = {k: v for k, v in value.items() if k in _EXPORT_FIELDS}
            for k in ("pseudonymise", "include_names", "include_source_path"):
                if k in known and not isinstance(known[k], bool):
                    raise ConfigError(f"settings: export.{k} must be true or false", path=source)
            if "delimiter" in known and not isinstance(known["delimiter"], str):
                raise ConfigError("settings: export.delimiter must be a string", path=source)
            if "last_directory" in known and not isinstance(known["last_directory"], str):
                raise ConfigError("settings: export.last_directory must be a string", path=source)
            kwargs["export"] = ExportOptions(**known)
        elif key in _FIELDS:
            if not isinstance(value, _TYPES[key]) or (key == "threshold" and isinstance(value, bool)):
                raise ConfigError(f"settings: {key} has the wrong type ({type(value).__name__})", path=source)
            if key == "pacs_port" and isinstance(value, bool):
                raise ConfigError("settings: pacs_port has the wrong type (bool)", path=source)
            if key in ("recent_folders", "pacs_allowed_callers") and not all(isinstance(v, str) for v in value):
                raise ConfigError(f"settings: {key} must be a list of strings", path=source)
            kwargs[key] = float(value) if key == "threshold" else value
        else:
            extra[key] = value
    if isinstance(kwargs.get("precision"), str):  # older files offered int8 / nf4 as a precision
        kwargs["precision"], moved = legacy_precision(kwargs["precision"])
        if moved and "quantisation" not in kwargs:
            kwargs["quantisation"] = moved
    settings = Settings(**kwargs, extra=extra)
    try:
        settings.validate()
    except ConfigError as exc:
        raise ConfigError(exc.reason, path=source) from None
    return settings


def load_settings(path: str | os.PathLike[str] | None = None, *, strict: bool = True) -> Settings:
    """Read settings (default: :func:`pneumoview.paths.settings_path`); defaults if the file is absent.

    A corrupt or invalid file raises ConfigError when ``strict``; otherwise it is renamed to
    ``settings.json.corrupt-<UTC time>`` (kept for the user to inspect) and defaults are returned.
    """
    target = Path(path) if path is not None else paths.settings_path()
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Settings()
    except OSError as exc:
        raise ConfigError(f"cannot read settings: {exc.strerror or exc}", path=target) from exc
    try:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"settings file is not valid JSON (line {exc.lineno})", path=target) from exc
        return settings_from_dict(data, source=target)
    except ConfigError:
        if strict:
            raise
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        os.replace(target, target.with_name(f"{target.name}.corrupt-{stamp}"))
        return Settings()


def save_settings(settings: Settings, path: str | os.PathLike[str] | None = None) -> Path:
    """Validate and write settings atomically (creating the folder); returns the path written."""
    settings.validate()
    target = Path(path) if path is not None else paths.settings_path()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, json.dumps(settings.to_json_dict(), indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise ConfigError(f"cannot write settings: {exc.strerror or exc}", path=target) from exc
    return target


def ensure_pseudonymise_key(settings: Settings, path: str | os.PathLike[str] | None = None) -> bytes:
    """The secret key for pseudonymised exports; created (32 random bytes) and saved on first use.

    The same key gives the same pseudonym for a patient across exports, so keep settings.json private.
    """
    if not settings.pseudonymise_key:
        settings.pseudonymise_key = secrets.token_hex(32)
        save_settings(settings, path)
    return bytes.fromhex(settings.pseudonymise_key)

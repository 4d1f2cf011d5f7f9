"""The model registry: every trained bundle kept in its own folder, one of them active.

Layout under the root (default ``paths.registry_dir()``: ``<user data>/models``)::

    bundles/<id>/manifest.json        the bundle as written by inference.bundle.save_bundle
    bundles/<id>/*.safetensors
    bundles/<id>/registry-entry.json  where it came from, when it was added, content SHA-256
    registry.json                     {"version": 1, "active": id | null, "history": [ids], "demo": bool}

``add`` validates a bundle fully (:func:`pneumoview.inference.bundle.check_bundle`, no torch) and
copies it into a new, uniquely named folder (:func:`pneumoview.atomic.atomic_dir`): an existing
bundle is never overwritten, so retraining can never replace the active model. ``activate`` pushes
the previously active id on a history stack; ``rollback`` pops it. ``demo`` records that the user
chose the built-in demo model instead (``use_demo``); activating or rolling back clears it.
``registry.json`` is written atomically under a lock file, so the app, the CLI and a training
process can use the registry at the same time, and the app reads it afresh whenever an analysis
starts (:mod:`pneumoview.active_model`). Leftovers of interrupted runs are removed by
:meth:`ModelRegistry.clean_stale`.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pneumoview import paths
from pneumoview.atomic import atomic_dir, atomic_write_text, clean_stale, write_error_reason
from pneumoview.clock import utc_now
from pneumoview.errors import BundleError
from pneumoview.inference.manifest import MANIFEST_FILE, check_bundle, check_safetensors_header, read_manifest_data

__all__ = [
    "ENTRY_FILE",
    "STATE_FILE",
    "BundleEntry",
    "ModelRegistry",
    "check_safetensors_header",
    "content_sha256",
    "format_metrics",
    "validate_bundle",
]

ENTRY_FILE = "registry-entry.json"
STATE_FILE = "registry.json"
LOCK_FILE = ".lock"
STATE_VERSION = 1
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class BundleEntry:
    """One registered bundle (read from its folder)."""

    id: str
    path: Path
    architecture: str
    model_id: str
    created: str
    added_at: str
    source: str
    note: str
    demo: bool
    app_version: str
    content_sha256: str  # over manifest.json and the tensor files, in name order
    manifest: dict[str, Any] = field(repr=False)

    @property
    def training(self) -> dict[str, Any]:
        value = self.manifest.get("training")
        return value if isinstance(value, dict) else {}

    @property
    def metrics(self) -> dict[str, Any]:
        """``manifest["training"]["metrics"]`` when present (validation AUC, accuracy, ...)."""
        value = self.training.get("metrics")
        return value if isinstance(value, dict) else {}

    @property
    def name(self) -> str:
        """Display name: the manifest's ``name``, else its architecture, else the registry id."""
        return str(self.manifest.get("name") or self.architecture or self.id)

    @property
    def base_fingerprints(self) -> dict[str, str]:
        """``{"clip": ..., "llama": ...}`` of the base weights it was trained on (empty when unknown)."""
        value = self.manifest.get("base_fingerprints")
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def format_metrics(metrics: dict[str, Any]) -> str:
    """``accuracy=0.850 auc=0.912`` (floats with 3 decimals, other scalars as they are), by name."""
    parts = []
    for name, value in sorted(metrics.items()):
        if isinstance(value, float):
            parts.append(f"{name}={value:.3f}")
        elif isinstance(value, (int, str, bool)):
            parts.append(f"{name}={value}")
    return " ".join(parts)


# --------------------------------------------------------------------------- validation
def validate_bundle(bundle_dir: Path) -> dict[str, Any]:
    """Validate a bundle folder fully (:func:`pneumoview.inference.bundle.check_bundle`, no torch)
    and return its ``manifest.json`` as plain JSON. Raises BundleError."""
    check_bundle(bundle_dir)
    return read_manifest_data(bundle_dir)


def content_sha256(bundle_dir: Path) -> str:
    """SHA-256 over (name, bytes) of manifest.json and every ``*.safetensors`` in name order."""
    digest = hashlib.sha256()
    for file in [bundle_dir / MANIFEST_FILE, *sorted(bundle_dir.glob("*.safetensors"))]:
        digest.update(file.name.encode("utf-8") + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return slug[:40] or "bundle"


# --------------------------------------------------------------------------- registry
class ModelRegistry:
    """Trained bundles under ``root`` (default ``paths.registry_dir()``)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else paths.registry_dir()
        self.bundles_dir = self.root / "bundles"

    # -- state ---------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive lock on ``<root>/.lock`` (POSIX flock; Windows msvcrt) for state changes."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            handle = open(self.root / LOCK_FILE, "a+b")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise BundleError(write_error_reason(exc, self.root / LOCK_FILE)) from exc
        with handle:
            if os.name == "posix":
                import fcntl

                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            else:  # pragma: no cover - Windows
                import msvcrt

                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)  # type: ignore[attr-defined]
            yield

    def _read_state(self) -> dict[str, Any]:
        path = self.root / STATE_FILE
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"version": STATE_VERSION, "active": None, "history": [], "demo": False}
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"the model registry's state file is unreadable: {exc}", path=path) from exc
        if not (
            isinstance(state, dict)
            and (state.get("active") is None or isinstance(state.get("active"), str))
            and isinstance(state.get("history", []), list)
            and isinstance(state.get("demo", False), bool)
        ):
            raise BundleError("the model registry's state file is malformed", path=path)
        state.setdefault("history", [])
        state.setdefault("demo", False)
        return state

    def _write_state(self, state: dict[str, Any]) -> None:
        state = {
            "version": STATE_VERSION,
            "active": state.get("active"),
            "history": list(state.get("history", [])),
            "demo": bool(state.get("demo", False)),
        }
        try:
            atomic_write_text(self.root / STATE_FILE, json.dumps(state, indent=2) + "\n")
        except OSError as exc:
            raise BundleError(write_error_reason(exc, self.root / STATE_FILE)) from exc

    def clean_stale(self) -> list[Path]:
        """Remove what interrupted runs left: staging copies (``.<name>.tmp-<pid>-*`` of a dead
        process, older ``.incoming-*`` / ``.import-*``), half-removed ``.removing-*`` folders and
        ``.registry.json.*.tmp`` files. Best effort; returns what was removed."""
        removed = clean_stale(self.root)
        removed += clean_stale(self.bundles_dir, legacy_patterns=(".incoming-*", ".removing-*", ".import-*"))
        return removed

    # -- entries -------------------------------------------------------------
    def _entry(self, bundle_dir: Path) -> BundleEntry:
        manifest = read_manifest_data(bundle_dir)
        try:
            meta = json.loads((bundle_dir / ENTRY_FILE).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            meta = {}
        return BundleEntry(
            id=bundle_dir.name,
            path=bundle_dir,
            architecture=str(manifest.get("architecture", "")),
            model_id=str(manifest.get("model_id", "")),
            created=str(manifest.get("created", "")),
            added_at=str(meta.get("added_at", "")),
            source=str(meta.get("source", "")),
            note=str(meta.get("note", "")),
            demo=bool(manifest.get("demo", False)),
            app_version=str(manifest.get("app_version", "")),
            content_sha256=str(meta.get("content_sha256", "")),
            manifest=manifest,
        )

    def list(self) -> list[BundleEntry]:
        """Registered bundles, oldest first. Folders that are not readable bundles are skipped."""
        if not self.bundles_dir.is_dir():
            return []
        entries = []
        for child in self.bundles_dir.iterdir():
            if child.name.startswith(".") or not child.is_dir():
                continue
            try:
                entries.append(self._entry(child))
            except BundleError:
                continue
        return sorted(entries, key=lambda e: (e.added_at, e.id))

    def get(self, bundle_id: str) -> BundleEntry:
        """The entry with this id; raises BundleError if there is none."""
        if not _ID_PATTERN.match(bundle_id):
            raise BundleError(f"not a model id: {bundle_id!r}")
        folder = self.bundles_dir / bundle_id
        if not folder.is_dir():
            raise BundleError(f"no model {bundle_id!r} in the registry", path=self.root)
        return self._entry(folder)

    def active_id(self) -> str | None:
        return self._read_state().get("active")

    def demo_chosen(self) -> bool:
        """True when the user chose the built-in demo model (until a bundle is activated again)."""
        return bool(self._read_state().get("demo"))

    def active(self) -> BundleEntry | None:
        """The active bundle, or None when none is active (or it was deleted outside PneumoView)."""
        active = self.active_id()
        if active is None:
            return None
        try:
            return self.get(active)
        except BundleError:
            return None

    def history(self) -> builtins.list[str]:
        """Ids that were active before, most recent last (what rollback returns to)."""
        return [str(i) for i in self._read_state()["history"]]

    # -- changes -------------------------------------------------------------
    def add(self, bundle_dir: str | os.PathLike[str], *, source: str = "", note: str = "") -> BundleEntry:
        """Validate a bundle folder fully and copy it into a new registry folder; returns its entry
        (not activated).

        ``source`` says where it came from (e.g. ``"training run 2026-11-27"`` or the path).
        The copy is verified against the original's content hash before it appears; a failed copy
        (``disk full: ...``, ``cannot write ...``) raises BundleError and leaves no folder behind.
        """
        src = Path(bundle_dir)
        manifest = validate_bundle(src)
        digest = content_sha256(src)
        added_at = utc_now()
        stamp = added_at[:19].replace("-", "").replace(":", "").replace("T", "-")
        base = f"{stamp}-{_slug(str(manifest.get('model_id') or manifest.get('architecture') or ''))}-{digest[:8]}"
        try:
            with atomic_dir(self.bundles_dir / base, unique=True) as staging:
                shutil.copytree(src, staging.path, dirs_exist_ok=True, ignore=shutil.ignore_patterns(ENTRY_FILE, ".*"))
                if content_sha256(staging.path) != digest:
                    raise BundleError("the bundle changed while it was being copied; try again", path=src)
                meta = {
                    "added_at": added_at,
                    "source": source or str(src.resolve()),
                    "note": note,
                    "content_sha256": digest,
                }
                (staging.path / ENTRY_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        except shutil.Error as exc:
            raise BundleError(_copy_error(exc, self.bundles_dir)) from exc
        except OSError as exc:
            raise BundleError(write_error_reason(exc, self.bundles_dir)) from exc
        assert staging.final is not None
        return self._entry(staging.final)

    def use_demo(self) -> None:
        """Record that the built-in demo model is to be used (kept across restarts; the active
        bundle stays active underneath and is used again after :meth:`activate` or :meth:`leave_demo`)."""
        with self._locked():
            state = self._read_state()
            if not state.get("demo"):
                state["demo"] = True
                self._write_state(state)

    def leave_demo(self) -> None:
        """Stop using the demo model: the active bundle (if any) is used again."""
        with self._locked():
            state = self._read_state()
            if state.get("demo"):
                state["demo"] = False
                self._write_state(state)

    def activate(self, bundle_id: str) -> BundleEntry:
        """Make ``bundle_id`` the active model; the previous one goes on the rollback history."""
        entry = self.get(bundle_id)
        validate_bundle(entry.path)
        with self._locked():
            state = self._read_state()
            if state.get("active") != bundle_id or state.get("demo"):
                if state.get("active") and state.get("active") != bundle_id:
                    state["history"].append(state["active"])
                state["active"] = bundle_id
                state["demo"] = False
                self._write_state(state)
        return entry

    def rollback(self) -> BundleEntry:
        """Re-activate the previously active model (skipping ones removed since); raises BundleError
        when there is nothing to go back to."""
        with self._locked():
            state = self._read_state()
            history = [str(i) for i in state["history"]]
            while history:
                candidate = history.pop()
                if candidate != state.get("active") and (self.bundles_dir / candidate).is_dir():
                    state["active"], state["history"], state["demo"] = candidate, history, False
                    self._write_state(state)
                    return self.get(candidate)
            raise BundleError("no earlier model to roll back to", path=self.root)

    def remove(self, bundle_id: str) -> None:
        """Delete a bundle that is not active (it is also dropped from the rollback history)."""
        entry = self.get(bundle_id)
        with self._locked():
            state = self._read_state()
            if state.get("active") == bundle_id:
                raise BundleError(f"model {bundle_id!r} is active; activate another one before removing it")
            trash = self.bundles_dir / f".removing-{uuid.uuid4().hex}"
            try:
                os.rename(entry.path, trash)  # disappears from listings at once
            except OSError as exc:
                raise BundleError(write_error_reason(exc, entry.path)) from exc
            state["history"] = [i for i in state["history"] if i != bundle_id]
            self._write_state(state)
        shutil.rmtree(trash, ignore_errors=True)

    def compare(self, first_id: str, second_id: str) -> builtins.list[tuple[str, Any, Any]]:
        """(metric, first, second) for every metric either bundle's manifest reports, sorted by name."""
        a, b = self.get(first_id).metrics, self.get(second_id).metrics
        return [(name, a.get(name), b.get(name)) for name in sorted(set(a) | set(b))]


def _copy_error(exc: shutil.Error, where: Path) -> str:
    """One line for a ``shutil.Error`` (a list of (src, dst, why) from copytree): its first reason."""
    first = exc.args[0][0] if exc.args and isinstance(exc.args[0], list) and exc.args[0] else None
    why = str(first[2]) if first and len(first) == 3 else str(exc)
    return write_error_reason(OSError(why), where)

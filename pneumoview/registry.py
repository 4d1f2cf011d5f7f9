"""The model registry: every trained bundle kept in its own folder, one of them active.

Layout under the root (default ``paths.registry_dir()``: ``<user data>/models``)::

    bundles/<id>/manifest.json        the bundle as written by inference.bundle.save_bundle
    bundles/<id>/*.safetensors
    bundles/<id>/registry-entry.json  where it came from, when it was added, content SHA-256
    registry.json                     {"version": 1, "active": id | null, "history": [ids]}

``add`` copies a bundle into a new, uniquely named folder (copy to a hidden temporary folder,
fsync, rename): an existing bundle is never overwritten, so retraining can never replace the
active model. ``activate`` pushes the previously active id on a history stack; ``rollback`` pops
it. ``registry.json`` is written atomically under a lock file, so the app, the CLI and a training
process can use the registry at the same time.

Listing reads ``manifest.json`` as plain JSON and checks the safetensors *headers* without torch;
loading tensors is the inference engine's job.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pneumoview import paths
from pneumoview.atomic import atomic_write_text, fsync_dir
from pneumoview.hashing import file_sha256
from pneumoview.errors import BundleError

MANIFEST_FILE = "manifest.json"
ENTRY_FILE = "registry-entry.json"
STATE_FILE = "registry.json"
LOCK_FILE = ".lock"
STATE_VERSION = 1
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


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


# --------------------------------------------------------------------------- validation
def read_manifest(bundle_dir: Path) -> dict[str, Any]:
    """``manifest.json`` of a bundle folder as a dict; raises BundleError."""
    path = bundle_dir / MANIFEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError("not a model bundle: manifest.json is missing", path=bundle_dir) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"cannot read manifest.json: {exc}", path=path) from exc
    except json.JSONDecodeError as exc:
        raise BundleError(f"manifest.json is not valid JSON (line {exc.lineno})", path=path) from exc
    if not isinstance(data, dict):
        raise BundleError("manifest.json must hold a JSON object", path=path)
    return data


def check_safetensors_header(path: Path) -> dict[str, Any]:
    """Parse a safetensors file's header (8-byte little-endian length + JSON) and check that the
    tensors' byte ranges exactly cover the data; returns the header. Raises BundleError."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise BundleError("truncated safetensors file (no header)", path=path)
            (length,) = struct.unpack("<Q", prefix)
            if length > min(size - 8, _MAX_SAFETENSORS_HEADER):
                raise BundleError("corrupt safetensors header length", path=path)
            header = json.loads(handle.read(length).decode("utf-8"))
    except OSError as exc:
        raise BundleError(f"cannot read tensors: {exc.strerror or exc}", path=path) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError("corrupt safetensors header (not JSON)", path=path) from exc
    if not isinstance(header, dict):
        raise BundleError("corrupt safetensors header (not an object)", path=path)
    data_size = size - 8 - length
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and 0 <= offsets[0] <= offsets[1] <= data_size):
            raise BundleError(f"tensor {name!r} lies outside the file (truncated?)", path=path)
        end = max(end, offsets[1])
    if end != data_size:
        raise BundleError(f"safetensors data is {data_size} bytes but the tensors cover {end}", path=path)
    return header


def validate_bundle(bundle_dir: Path) -> dict[str, Any]:
    """Check a bundle folder without torch: manifest.json parses, at least one ``*.safetensors``,
    every tensor file's header is sound, and the manifest's ``weights_file`` exists with the
    manifest's ``weights_sha256`` (fields of inference.bundle.Manifest). Returns the manifest."""
    if not bundle_dir.is_dir():
        raise BundleError("not a folder", path=bundle_dir)
    manifest = read_manifest(bundle_dir)
    tensor_files = sorted(bundle_dir.glob("*.safetensors"))
    if not tensor_files:
        raise BundleError("not a model bundle: no .safetensors file", path=bundle_dir)
    for tensor_file in tensor_files:
        check_safetensors_header(tensor_file)
    weights_name = manifest.get("weights_file")
    if weights_name is not None:
        if not isinstance(weights_name, str) or Path(weights_name).name != weights_name:
            raise BundleError(f"manifest names a weights file outside the bundle: {weights_name!r}", path=bundle_dir)
        weights = bundle_dir / weights_name
        if not weights.is_file():
            raise BundleError(f"bundle lacks its weights file {weights_name}", path=bundle_dir)
        expected = manifest.get("weights_sha256")
        if expected and file_sha256(weights) != expected:
            raise BundleError("weights file is corrupt or was changed (SHA-256 differs from the manifest)", path=weights)
    return manifest


def content_sha256(bundle_dir: Path) -> str:
    """SHA-256 over (name, bytes) of manifest.json and every ``*.safetensors`` in name order."""
    digest = hashlib.sha256()
    for file in [bundle_dir / MANIFEST_FILE, *sorted(bundle_dir.glob("*.safetensors"))]:
        digest.update(file.name.encode("utf-8") + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a+b") as handle:
            if os.name == "posix":
                import fcntl

                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            else:  # pragma: no cover - Windows
                import msvcrt

                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
            yield

    def _read_state(self) -> dict[str, Any]:
        path = self.root / STATE_FILE
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"version": STATE_VERSION, "active": None, "history": []}
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"the model registry's state file is unreadable: {exc}", path=path) from exc
        if not (
            isinstance(state, dict)
            and (state.get("active") is None or isinstance(state.get("active"), str))
            and isinstance(state.get("history", []), list)
        ):
            raise BundleError("the model registry's state file is malformed", path=path)
        state.setdefault("history", [])
        return state

    def _write_state(self, state: dict[str, Any]) -> None:
        state = {"version": STATE_VERSION, "active": state.get("active"), "history": list(state.get("history", []))}
        atomic_write_text(self.root / STATE_FILE, json.dumps(state, indent=2) + "\n")

    # -- entries -------------------------------------------------------------
    def _entry(self, bundle_dir: Path) -> BundleEntry:
        manifest = read_manifest(bundle_dir)
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

    def active(self) -> BundleEntry | None:
        """The active bundle, or None when none is active (or it was deleted outside PneumoView)."""
        active = self.active_id()
        if active is None:
            return None
        try:
            return self.get(active)
        except BundleError:
            return None

    def history(self) -> list[str]:
        """Ids that were active before, most recent last (what rollback returns to)."""
        return [str(i) for i in self._read_state()["history"]]

    # -- changes -------------------------------------------------------------
    def add(self, bundle_dir: str | os.PathLike[str], *, source: str = "", note: str = "") -> BundleEntry:
        """Copy a bundle folder into a new registry folder; returns its entry (not activated).

        ``source`` says where it came from (e.g. ``"training run 2026-11-27"`` or the path).
        The copy is verified against the original's content hash before it appears.
        """
        src = Path(bundle_dir)
        manifest = validate_bundle(src)
        digest = content_sha256(src)
        self.bundles_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.bundles_dir / f".incoming-{uuid.uuid4().hex}"
        try:
            shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(ENTRY_FILE, ".*"))
            if content_sha256(tmp) != digest:
                raise BundleError("the bundle changed while it was being copied; try again", path=src)
            added_at = utc_now()
            meta = {"added_at": added_at, "source": source or str(src.resolve()), "note": note, "content_sha256": digest}
            atomic_write_text(tmp / ENTRY_FILE, json.dumps(meta, indent=2) + "\n")
            if os.name == "posix":
                for file in (f for f in tmp.rglob("*") if f.is_file()):
                    with file.open("rb") as handle:
                        os.fsync(handle.fileno())
                fsync_dir(tmp)
            stamp = added_at[:19].replace("-", "").replace(":", "").replace("T", "-")
            base = f"{stamp}-{_slug(str(manifest.get('model_id') or manifest.get('architecture') or ''))}-{digest[:8]}"
            final = self._rename_unique(tmp, base)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise BundleError(f"cannot copy the bundle into the registry: {exc.strerror or exc}", path=src) from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(self.bundles_dir)
        return self._entry(final)

    def _rename_unique(self, tmp: Path, base: str) -> Path:
        for n in range(1, 1000):
            final = self.bundles_dir / (base if n == 1 else f"{base}-{n}")
            if final.exists():
                continue
            try:
                os.rename(tmp, final)  # fails if another process created a non-empty folder meanwhile
            except OSError:
                if final.exists():
                    continue
                raise
            return final
        raise BundleError("could not find a free name in the model registry", path=self.bundles_dir)

    def activate(self, bundle_id: str) -> BundleEntry:
        """Make ``bundle_id`` the active model; the previous one goes on the rollback history."""
        entry = self.get(bundle_id)
        validate_bundle(entry.path)
        with self._locked():
            state = self._read_state()
            if state.get("active") != bundle_id:
                if state.get("active"):
                    state["history"].append(state["active"])
                state["active"] = bundle_id
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
                    state["active"], state["history"] = candidate, history
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
            os.rename(entry.path, trash)  # disappears from listings at once
            state["history"] = [i for i in state["history"] if i != bundle_id]
            self._write_state(state)
        shutil.rmtree(trash, ignore_errors=True)

    def compare(self, first_id: str, second_id: str) -> list[tuple[str, Any, Any]]:
        """(metric, first, second) for every metric either bundle's manifest reports, sorted by name."""
        a, b = self.get(first_id).metrics, self.get(second_id).metrics
        return [(name, a.get(name), b.get(name)) for name in sorted(set(a) | set(b))]

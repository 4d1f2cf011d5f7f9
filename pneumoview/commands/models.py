"""``pneumoview models``: list, show, add, activate, roll back and remove trained model bundles.

Examples::

    pneumoview models list
    pneumoview models add path/to/bundle --activate
    pneumoview models activate 20261127-211500-run-3-1a2b3c4d
    pneumoview models rollback
    pneumoview models show 20261127-211500-run-3-1a2b3c4d --json
    pneumoview models compare ID_A ID_B
    pneumoview models import-reference checkpoint-best.pth --name "PneumoLLM (paper)"
    pneumoview models use-demo

The registry lives in the platformdirs user-data folder (or ``$PNEUMOVIEW_HOME/data/models``);
``--root`` points at another one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from pneumoview.atomic import write_error_reason
from pneumoview.errors import BundleError
from pneumoview.registry import BundleEntry, ModelRegistry, format_metrics


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", help="registry folder (default: the user-data folder's models/)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser("list", help="list registered bundles; * marks the active one")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = actions.add_parser("show", help="show one bundle's manifest summary")
    p.add_argument("id")
    p.add_argument("--json", action="store_true", help="print the entry and full manifest as JSON")
    p = actions.add_parser("add", help="copy a bundle folder into the registry (never overwrites)")
    p.add_argument("bundle_dir")
    p.add_argument("--source", default="", help="where it came from (default: the folder's path)")
    p.add_argument("--note", default="")
    p.add_argument("--activate", action="store_true", help="make it the active model as well")
    p = actions.add_parser("activate", help="make a bundle the active model")
    p.add_argument("id")
    actions.add_parser("rollback", help="re-activate the previously active bundle")
    p = actions.add_parser("remove", help="delete a bundle that is not active")
    p.add_argument("id")
    p = actions.add_parser("compare", help="compare the training metrics of two bundles")
    p.add_argument("first")
    p.add_argument("second")
    p = actions.add_parser(
        "import-reference",
        help="register the reference implementation's released checkpoint as a bundle",
        description="Read the reference PneumoLLM checkpoint (torch.save file) safely - tensors only, never "
        "code - and register it as a bundle (not activated unless --activate).",
    )
    p.add_argument("checkpoint")
    p.add_argument("--name", default="", help="display name (default: from the file name)")
    p.add_argument(
        "--architecture",
        default="",
        help="architecture config name or JSON file (default: the full ViT-L/14 + LLaMA-7B model)",
    )
    p.add_argument("--activate", action="store_true", help="make it the active model as well")
    actions.add_parser(
        "use-demo", help="use the built-in demo model (random weights, not a diagnosis) until a bundle is activated"
    )


def _entry_dict(entry: BundleEntry, active_id: str | None, *, manifest: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": entry.id,
        "name": entry.name,
        "active": entry.id == active_id,
        "architecture": entry.architecture,
        "model_id": entry.model_id,
        "created": entry.created,
        "added_at": entry.added_at,
        "source": entry.source,
        "note": entry.note,
        "demo": entry.demo,
        "app_version": entry.app_version,
        "content_sha256": entry.content_sha256,
        "path": str(entry.path),
        "metrics": entry.metrics,
        "base_fingerprints": entry.base_fingerprints,
    }
    if manifest:
        data["manifest"] = entry.manifest
    return data


def _override_note() -> str | None:
    """A warning when settings name an explicit bundle folder, which wins over the registry's active model."""
    from pneumoview.errors import ConfigError
    from pneumoview.settings import load_settings

    try:
        settings = load_settings()
    except ConfigError:
        return None
    if settings.active_bundle:
        return (
            f"note: the settings name the bundle {settings.active_bundle}, which the app and "
            "'pneumoview analyze' use instead of the registry's active model; clear it in Settings "
            "to use the registry"
        )
    return None


def _activated(text: str, out: TextIO) -> None:
    print(text, file=out)
    note = _override_note()
    if note:
        print(note, file=sys.stderr)


def import_reference(
    registry: ModelRegistry, checkpoint: str | Path, *, name: str = "", architecture: str = ""
) -> BundleEntry:
    """Turn the reference checkpoint into a bundle (in a temporary folder beside the registry's
    bundles) and register it; the temporary folder is removed whatever happens."""
    from pneumoview.inference.bundle import bundle_from_reference_checkpoint
    from pneumoview.inference.config import load_config

    config = load_config(architecture) if architecture else None
    try:
        registry.bundles_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".import-", dir=registry.bundles_dir))
    except OSError as exc:
        raise BundleError(write_error_reason(exc, registry.bundles_dir)) from exc
    try:
        bundle = bundle_from_reference_checkpoint(checkpoint, work / "bundle", name=name, config=config)
        return registry.add(bundle, source=f"reference checkpoint {Path(checkpoint).name}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    registry = ModelRegistry(args.root)
    registry.clean_stale()  # leftovers of interrupted runs
    return _ACTIONS[args.action](registry, args, sys.stdout)  # argparse restricts the choices


def _list(registry: ModelRegistry, args: argparse.Namespace, out: TextIO) -> int:
    entries = registry.list()
    active_id = registry.active_id()
    if args.json:
        json.dump([_entry_dict(e, active_id) for e in entries], out, indent=2)
        out.write("\n")
        return 0
    if registry.demo_chosen():
        print("using the demo model (random weights: not a diagnosis); activate a bundle to leave it", file=out)
    if not entries:
        print(f"no models in {registry.root}", file=out)
        return 0
    for e in entries:
        mark = "*" if e.id == active_id else " "
        demo = "  [DEMO]" if e.demo else ""
        metrics = format_metrics(e.metrics)
        print(f"{mark} {e.id}  {e.architecture}  added {e.added_at[:19]}{demo}  {metrics}".rstrip(), file=out)
    return 0


def _show(registry: ModelRegistry, args: argparse.Namespace, out: TextIO) -> int:
    entry = registry.get(args.id)
    data = _entry_dict(entry, registry.active_id(), manifest=args.json)
    if args.json:
        json.dump(data, out, indent=2)
        out.write("\n")
    else:
        for key, value in data.items():
            if key == "metrics":
                value = format_metrics(value) or "-"
            print(f"{key:>15}: {value}", file=out)
    return 0


def _registered(registry: ModelRegistry, entry: BundleEntry, verb: str, activate: bool, out: TextIO) -> int:
    """Reports a bundle just added (or imported) and, with ``activate``, makes it the active one."""
    print(f"{verb} {entry.id}", file=out)
    if activate:
        registry.activate(entry.id)
        _activated(f"active: {entry.id}", out)
    return 0


def _add(registry: ModelRegistry, args: argparse.Namespace, out: TextIO) -> int:
    entry = registry.add(args.bundle_dir, source=args.source, note=args.note)
    return _registered(registry, entry, "added", args.activate, out)


def _import_reference(registry: ModelRegistry, args: argparse.Namespace, out: TextIO) -> int:
    entry = import_reference(registry, args.checkpoint, name=args.name, architecture=args.architecture)
    return _registered(registry, entry, "imported", args.activate, out)


def _activate(registry: ModelRegistry, args: argparse.Namespace, out: TextIO) -> int:
    entry = registry.activate(args.id)
    _activated(f"active: {entry.id}", out)
    return 0


def _rollback(registry: ModelRegistry, args: argparse.Namespace, out: TextIO) -> int:
    entry = registry.rollback()
    _activated(f"rolled back; active: {entry.id}", out)
    return 0


def _remove(registry: ModelRegistry, args: argparse.Namespace, out: TextIO) -> int:
    registry.remove(args.id)
    print(f"removed {args.id}", file=out)
    return 0


def _use_demo(registry: ModelRegistry, args: argparse.Namespace, out: TextIO) -> int:
    registry.use_demo()
    print("using the demo model (random weights: not a diagnosis) until a bundle is activated", file=out)
    return 0


def _compare(registry: ModelRegistry, args: argparse.Namespace, out: TextIO) -> int:
    rows = registry.compare(args.first, args.second)
    if not rows:
        print("neither bundle reports training metrics", file=out)
        return 0
    width = max(len(name) for name, _a, _b in rows)
    print(f"{'metric':<{width}}  {args.first}  {args.second}", file=out)
    for name, a, b in rows:
        print(f"{name:<{width}}  {_cell(a)}  {_cell(b)}", file=out)
    return 0


_ACTIONS: dict[str, Callable[[ModelRegistry, argparse.Namespace, TextIO], int]] = {
    "list": _list,
    "show": _show,
    "add": _add,
    "activate": _activate,
    "rollback": _rollback,
    "remove": _remove,
    "import-reference": _import_reference,
    "use-demo": _use_demo,
    "compare": _compare,
}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)

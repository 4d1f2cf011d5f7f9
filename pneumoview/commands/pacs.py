"""``pneumoview pacs find | get | send``: query, retrieve from and send to a PACS (DIMSE or DICOMweb).

* ``find --pacs HOST:PORT:AET [--patient-id ID] [--name NAME] [--date RANGE] [--modality CR,DX] [--json]``
* ``get --pacs HOST:PORT:AET --study UID --into DIR`` (C-GET; ``--move-port PORT``: C-MOVE to a
  temporary listener instead, which the PACS must know as ``--aet`` at this host and port)
* ``send FILES_OR_DIRS --pacs HOST:PORT:AET`` (C-STORE)

Each takes ``--dicomweb URL`` instead of ``--pacs`` (QIDO-RS / WADO-RS / STOW-RS). Exit status 0 on
success, 1 when some instances failed (listed on stderr), 2 with one line when nothing could run.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from dataclasses import asdict
from pathlib import Path

from pneumoview.errors import ConfigError


def configure(parser: argparse.ArgumentParser) -> None:
    from pneumoview.pacs.scp import DEFAULT_AE_TITLE

    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    find = sub.add_parser("find", help="list studies matching the keys")
    get = sub.add_parser("get", help="retrieve one study into a folder")
    send = sub.add_parser("send", help="send DICOM files (e.g. the SR and Secondary Capture results)")
    for p in (find, get, send):
        where = p.add_mutually_exclusive_group(required=True)
        where.add_argument("--pacs", metavar="HOST:PORT:AET", help="DICOM (DIMSE) peer")
        where.add_argument("--dicomweb", metavar="URL", help="DICOMweb service root, e.g. http://host:8042/dicom-web")
        p.add_argument("--aet", default=DEFAULT_AE_TITLE, help=f"our calling AE title (default {DEFAULT_AE_TITLE})")
        p.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds (default 30)")
    find.add_argument("--patient-id", default="", help="Patient ID (wildcards * and ?)")
    find.add_argument("--name", default="", help="Patient's name (wildcards; e.g. 'DOE^*')")
    find.add_argument("--date", default="", help="Study date or range: YYYYMMDD, YYYYMMDD-YYYYMMDD, -YYYYMMDD")
    find.add_argument("--modality", default="", help="modalities in study, comma-separated (e.g. CR,DX)")
    find.add_argument("--json", action="store_true", help="one JSON object per line")
    get.add_argument("--study", required=True, metavar="UID", help="Study Instance UID")
    get.add_argument("--into", required=True, type=Path, metavar="DIR", help="inbox folder (DIR/<study>/<sop>.dcm)")
    get.add_argument("--move-port", type=int, metavar="PORT", help="C-MOVE to a temporary listener on this port")
    send.add_argument("paths", nargs="+", type=Path, metavar="FILE_OR_DIR")


def _client(args: argparse.Namespace):  # -> scu.Client | web.WebClient
    from pneumoview.pacs.client import connect

    return connect(args.dicomweb or args.pacs, args.aet, args.timeout)


def run(args: argparse.Namespace) -> int:
    return {"find": _find, "get": _get, "send": _send}[args.action](args)


def _find(args: argparse.Namespace) -> int:
    modalities = [m for m in args.modality.split(",") if m.strip()]
    matches = _client(args).find_studies(
        patient_id=args.patient_id, patient_name=args.name, date=args.date, modalities=modalities
    )
    for m in matches:
        if args.json:
            print(json.dumps(asdict(m), ensure_ascii=False))
        else:
            count = "?" if m.instances is None else m.instances
            print(
                f"{m.study_uid}\t{m.study_date}\t{m.patient_id}\t{m.patient_name}\t{','.join(m.modalities)}\t"
                f"{count} image(s)\t{m.study_description}"
            )
    print(f"{len(matches)} study(ies)", file=sys.stderr)
    return 0


def _progress(done: int, total: int) -> None:
    print(f"\r{done}/{total}", end="", file=sys.stderr, flush=True)


def _get(args: argparse.Namespace) -> int:
    from pneumoview.pacs.scp import Inbox

    inbox = Inbox(args.into)
    if args.move_port is not None:
        if args.dicomweb:
            raise ConfigError("--move-port is for DIMSE (--pacs) only")
        return _move(args, inbox)
    report = _client(args).get_study(args.study, inbox, progress=_progress)
    print(f"\nretrieved {len(report.written)} instance(s) into {args.into}", file=sys.stderr)
    for what, why in report.failed:
        print(f"failed: {what}: {why}", file=sys.stderr)
    return 1 if report.failed else 0


def _move(args: argparse.Namespace, inbox) -> int:
    from pneumoview.pacs.scp import ListenerConfig, StorageListener

    stored = threading.Event()
    listener = StorageListener(
        ListenerConfig(inbox=inbox.root, ae_title=args.aet, port=args.move_port),
        lambda e: stored.set() if e.kind == "stored" else None,
    )
    listener.start()
    try:
        _client(args).move_study(args.study, args.aet)
    finally:
        listener.stop()
    print(
        f"retrieved {listener.stored} instance(s) into {args.into} (C-MOVE), {listener.refused} refused",
        file=sys.stderr,
    )
    return 1 if listener.refused else 0


def _send(args: argparse.Namespace) -> int:
    from pneumoview.pacs.scu import dicom_files

    files = dicom_files(args.paths)
    report = _client(args).send_files(files, progress=_progress)
    print(f"\nsent {len(report.sent)} of {len(files)} file(s)", file=sys.stderr)
    for what, why in report.failed:
        print(f"failed: {what}: {why}", file=sys.stderr)
    return 1 if report.failed else 0

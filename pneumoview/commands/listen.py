"""``pneumoview listen --aet AET --port PORT --into DIR``: a Storage SCP receiving studies into an inbox.

Images sent to ``AET`` at ``HOST:PORT`` (default loopback 127.0.0.1) land in
``DIR/<StudyInstanceUID>/<SOPInstanceUID>.dcm`` (:mod:`pneumoview.pacs.scp`). A study is complete
when nothing more arrives for ``--quiet`` seconds; with ``--analyse`` it is then analysed by
``pneumoview analyze`` in a child process (a crash there cannot stop the listener), writing
``RESULTS/<StudyInstanceUID>.csv`` and, with ``--dicom-out``, the SR and Secondary Capture, which
``--send-results`` sends on to a PACS (C-STORE or STOW-RS).
Runs until Ctrl+C or SIGTERM. One line per event on stderr (no patient identifiers).
"""

from __future__ import annotations

import argparse
import signal
import ssl
import subprocess
import sys
import threading
from pathlib import Path

from pneumoview.errors import ConfigError, PneumoViewError


def configure(parser: argparse.ArgumentParser) -> None:
    from pneumoview.pacs.scp import DEFAULT_AE_TITLE, DEFAULT_PORT, LOOPBACK

    parser.add_argument("--aet", default=DEFAULT_AE_TITLE, help=f"our AE title (default {DEFAULT_AE_TITLE})")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT}; 0: any free)"
    )
    parser.add_argument("--host", default=LOOPBACK, help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--into", type=Path, required=True, metavar="DIR", help="the inbox folder")
    parser.add_argument("--allow", default="", metavar="AET,...", help="calling AE titles allowed (default: any)")
    parser.add_argument(
        "--quiet",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="a study is complete after this long without new images (default 10)",
    )
    parser.add_argument("--analyse", "--analyze", action="store_true", help="analyse each study when complete")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--demo", action="store_true", help="analyse with the demo model (marked DEMO)")
    which.add_argument("--model", metavar="BUNDLE", help="analyse with this bundle (default: the active model)")
    parser.add_argument("--results", type=Path, metavar="DIR", help="CSV reports of --analyse (default: DIR-results)")
    parser.add_argument("--dicom-out", type=Path, metavar="DIR", help="also write SR + Secondary Capture here")
    parser.add_argument(
        "--send-results",
        metavar="HOST:PORT:AET|URL",
        help="send the new SR + Secondary Capture of each analysed study there (needs --dicom-out)",
    )
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate: accept DICOM over TLS only")
    parser.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    parser.add_argument("--max-seconds", type=float, help=argparse.SUPPRESS)  # tests: stop after this long


def tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError("--tls-cert and --tls-key go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS certificate / key: {exc}", path=cert) from exc
    return context


def analyse_command(study_dir: Path, args: argparse.Namespace) -> list[str]:
    """The ``pneumoview analyze`` child command for one complete study."""
    results = args.results or args.into.with_name(args.into.name + "-results")
    command = [
        sys.executable,
        "-m",
        "pneumoview",
        "analyze",
        str(study_dir),
        "--quiet",
        "--csv",
        str(results / f"{study_dir.name}.csv"),
    ]
    command += ["--demo"] if args.demo else ["--model", args.model] if args.model else []
    if args.dicom_out:
        command += ["--dicom-out", str(args.dicom_out)]
    return command


def _analyse_study(study: Path, args: argparse.Namespace) -> None:
    """Analyse one complete study in a child process; with --send-results, send the objects it wrote."""
    before = set(args.dicom_out.glob("*.dcm")) if args.dicom_out and args.dicom_out.is_dir() else set()
    code = subprocess.call(analyse_command(study, args))
    print(f"analysed a study: exit status {code}", file=sys.stderr, flush=True)
    if not args.send_results or not args.dicom_out:
        return
    new = sorted(set(args.dicom_out.glob("*.dcm")) - before)
    from pneumoview.pacs.client import connect

    try:
        report = connect(args.send_results, args.aet).send_files(new)
    except PneumoViewError as exc:  # the PACS is down: say so, keep listening
        print(f"results not sent: {exc.message}", file=sys.stderr, flush=True)
        return
    print(f"sent {len(report.sent)} of {len(new)} result object(s)", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from pneumoview.pacs.scp import ListenerConfig, ListenerEvent, StorageListener

    allowed = tuple(a.strip() for a in args.allow.split(",") if a.strip())
    config = ListenerConfig(
        inbox=args.into,
        ae_title=args.aet,
        port=args.port,
        host=args.host,
        allowed_callers=allowed,
        quiet_seconds=args.quiet,
        ssl_context=tls_context(args.tls_cert, args.tls_key),
    )
    if args.send_results and not args.dicom_out:
        raise ConfigError("--send-results needs --dicom-out (the folder the results are written to)")
    if args.analyse:
        (args.results or args.into.with_name(args.into.name + "-results")).mkdir(parents=True, exist_ok=True)
    done = threading.Event()
    work: list[Path] = []
    lock = threading.Condition()

    def on_event(event: ListenerEvent) -> None:
        if event.kind == "stored":
            return
        if event.kind == "study-complete":
            print(f"study complete: {event.count} image(s)", file=sys.stderr, flush=True)
            if args.analyse and event.path is not None:
                with lock:
                    work.append(event.path)
                    lock.notify()
        else:
            print(f"{event.kind}: {event.reason} (from {event.calling_ae})", file=sys.stderr, flush=True)

    listener = StorageListener(config, on_event)
    listener.start()
    print(f"listening as {args.aet} on {args.host}:{listener.port}, inbox {args.into}", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    timer = threading.Timer(args.max_seconds, done.set) if args.max_seconds else None
    if timer is not None:
        timer.start()
    try:
        while not done.is_set():
            with lock:
                lock.wait(timeout=0.2)
                todo, work[:] = list(work), []
            for study in todo:
                _analyse_study(study, args)
    except KeyboardInterrupt:
        pass
    finally:
        if timer is not None:
            timer.cancel()
        listener.stop()
    print(f"stopped: {listener.stored} stored, {listener.refused} refused", file=sys.stderr)
    return 0

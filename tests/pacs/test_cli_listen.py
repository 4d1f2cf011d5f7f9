"""``pneumoview listen`` as users run it: a child process, storescu / pynetdicom sending, SIGTERM to stop."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pacs_support import LOOPBACK, free_port, small_image
from pynetdicom import AE
from pynetdicom.sop_class import DigitalXRayImageStorageForPresentation as DX

from pneumoview.commands.listen import analyse_command, configure, tls_context
from pneumoview.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure(parser)
    return parser.parse_args(list(argv))


def test_listen_receives_until_sigterm_and_refuses_strangers(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pneumoview",
            "listen",
            "--aet",
            "PVTEST",
            "--port",
            str(port),
            "--into",
            str(tmp_path / "inbox"),
            "--allow",
            "MODALITY,OTHER",
            "--quiet",
            "0.3",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stderr is not None
        assert "listening as PVTEST on 127.0.0.1" in child.stderr.readline()
        image = small_image()
        for calling, expected in (("MODALITY", True), ("STRANGER", False)):
            ae = AE(ae_title=calling)
            ae.add_requested_context(DX)
            assoc = ae.associate(LOOPBACK, port, ae_title="PVTEST")
            assert assoc.is_established is expected
            if expected:
                assert assoc.send_c_store(image).Status == 0
                assoc.release()
        time.sleep(1.0)
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0
    assert "study complete: 1 image(s)" in err and "rejected: association rejected (from STRANGER)" in err
    assert "stopped: 1 stored, 0 refused" in err
    assert (tmp_path / "inbox" / image.StudyInstanceUID / f"{image.SOPInstanceUID}.dcm").is_file()
    assert "PV-TEST" not in err  # no patient identifiers in the log


def test_analyse_command_runs_analyze_on_the_study_folder(tmp_path: Path) -> None:
    args = _parse("--into", str(tmp_path / "inbox"), "--analyse", "--demo", "--dicom-out", str(tmp_path / "dcm"))
    command = analyse_command(tmp_path / "inbox" / "1.2.3", args)
    assert command[1:4] == ["-m", "pneumoview", "analyze"] and command[4] == str(tmp_path / "inbox" / "1.2.3")
    assert "--demo" in command and command[command.index("--csv") + 1] == str(tmp_path / "inbox-results" / "1.2.3.csv")
    assert command[command.index("--dicom-out") + 1] == str(tmp_path / "dcm")
    args = _parse("--into", str(tmp_path / "inbox"), "--analyse", "--model", "bundle-x", "--results", "r")
    command = analyse_command(tmp_path / "inbox" / "9", args)
    assert command[command.index("--model") + 1] == "bundle-x" and "--dicom-out" not in command


def test_tls_options_go_together(tmp_path: Path) -> None:
    assert tls_context(None, None) is None
    with pytest.raises(ConfigError):
        tls_context(tmp_path / "cert.pem", None)
    with pytest.raises(ConfigError):
        tls_context(tmp_path / "cert.pem", tmp_path / "key.pem")  # missing files

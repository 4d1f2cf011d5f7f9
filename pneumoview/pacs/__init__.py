"""PACS integration, Qt-free: Storage SCP (scp), DIMSE SCU (scu), DICOMweb (web), SR / SC writers (sr, sc).

Every UID PneumoView creates comes from :mod:`pneumoview.pacs.uids`. pynetdicom, highdicom and
dicomweb-client are imported here only, never by the window's import path.
"""
from __future__ import annotations

from pneumoview.errors import PneumoViewError


class PacsError(PneumoViewError):
    """A PACS could not be reached, refused us, or answered with a failure status."""


def connect(remote: str, calling_aet: str = "PNEUMOVIEW", timeout: float = 30.0):  # -> scu.Client | web.WebClient
    """A client for ``remote``: ``HOST:PORT:AET`` -> DIMSE (:class:`scu.Client`), ``http(s)://...`` -> DICOMweb.

    Both answer ``find_studies``, ``get_study`` and ``send_files`` alike.
    """
    remote = remote.strip()
    if remote.startswith(("http://", "https://")):
        from pneumoview.pacs.web import WebClient

        return WebClient(remote, timeout=timeout)
    from pneumoview.pacs.scu import Client, parse_pacs

    return Client(parse_pacs(remote), calling_aet=calling_aet, timeout=timeout)

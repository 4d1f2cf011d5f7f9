"""One client for a PACS address: ``HOST:PORT:AET`` (DIMSE) or ``http(s)://...`` (DICOMweb)."""

from __future__ import annotations

from pneumoview.pacs.scu import Client, parse_pacs
from pneumoview.pacs.web import WebClient


def connect(remote: str, calling_aet: str = "PNEUMOVIEW", timeout: float = 30.0) -> Client | WebClient:
    """A client for ``remote``: ``HOST:PORT:AET`` -> DIMSE (:class:`~pneumoview.pacs.scu.Client`),
    ``http(s)://...`` -> DICOMweb (:class:`~pneumoview.pacs.web.WebClient`).

    Both answer ``find_studies``, ``get_study`` and ``send_files`` alike.
    """
    remote = remote.strip()
    if remote.startswith(("http://", "https://")):
        return WebClient(remote, timeout=timeout)
    return Client(parse_pacs(remote), calling_aet=calling_aet, timeout=timeout)

"""PACS integration, Qt-free: Storage SCP (scp), DIMSE SCU (scu), DICOMweb (web), SR / SC writers (sr, sc).

Every UID PneumoView creates comes from :mod:`pneumoview.pacs.uids`. pynetdicom, highdicom and
dicomweb-client are imported here only, never by the window's import path.
"""
from __future__ import annotations

from pneumoview.errors import PneumoViewError


class PacsError(PneumoViewError):
    """A PACS could not be reached, refused us, or answered with a failure status."""

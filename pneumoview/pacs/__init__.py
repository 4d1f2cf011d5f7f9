"""PACS integration, Qt-free: Storage SCP (scp), DIMSE SCU (scu), DICOMweb (web), SR / SC writers (sr, sc),
one client for either protocol (client).

Every UID PneumoView creates comes from :mod:`pneumoview.pacs.uids`. pynetdicom, highdicom and
dicomweb-client are imported here only, never by the window's import path. Errors are
:class:`pneumoview.errors.PacsError`.
"""

"""No patient identifiers in what training writes: keyed hashes for patient IDs, counts elsewhere.

Bundles and model cards are meant to be shared between clinics, and work folders and caches
outlive a run. Where a list of patients is needed (the cross-validation split, so that
``--split-from`` can rebuild it), each ID is written as the keyed hash of the pseudonymised CSV
export (``pneumoview.report.pseudonym``, HMAC-SHA256 with the installation's
``pseudonymise_key`` from the settings), never raw. Paths and names are never written at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pneumoview.report import pseudonym

#: ``split`` records whose patient lists are keyed hashes say so under this key.
ID_SCHEME_KEY = "patient_ids"
ID_SCHEME = "hmac-sha256-pseudonym"

PatientHasher = Callable[[str], str]


def patient_hasher(key: bytes) -> PatientHasher:
    """``patient_id -> "P-<16 hex>"`` with ``key`` (the same rule and key as the pseudonymised export)."""

    def hash_id(patient_id: str) -> str:
        return pseudonym(key, patient_id, kind="patient")

    return hash_id


def load_patient_key() -> bytes:
    """The installation's pseudonymisation key from the settings (created and saved on first use).

    Raises ``OSError`` when the settings cannot be written, ``ConfigError`` when they are unreadable.
    """
    from pneumoview.settings import ensure_pseudonymise_key, load_settings

    return ensure_pseudonymise_key(load_settings(strict=False))


def hashed(ids: Iterable[str], hasher: PatientHasher) -> list[str]:
    """Sorted keyed hashes of ``ids`` (duplicates removed)."""
    return sorted({hasher(i) for i in ids})

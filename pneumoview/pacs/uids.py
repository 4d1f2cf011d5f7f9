"""The one rule for new DICOM UIDs that PneumoView creates (SR, Secondary Capture, series).

PneumoView has no registered UID root of its own, so it uses the root PS3.5 B.2 gives to
everyone: ``2.25.`` followed by the decimal value of a 128-bit UUID (ISO/IEC 9834-8). Such UIDs are
unique without any registry and are at most 44 characters (the limit is 64, PS3.5 9.1).

* :func:`new_uid` - a random (version 4) UUID: a new object every call.
* :func:`derived_uid` - a name-based (version 5, SHA-1) UUID of the given parts, so the same result
  written twice (same source SOP Instance UID, same bundle fingerprint, same kind of object) gets
  the same UID and a PACS replaces it instead of storing a duplicate.

Nothing else in PneumoView may invent UIDs (``grep -r generate_uid`` should find only this file).
"""

from __future__ import annotations

import re
import uuid

#: PS3.5 B.2: the UUID-derived root.
UID_ROOT = "2.25."
#: Namespace of :func:`derived_uid` (a fixed UUID; changing it changes every derived UID).
_NAMESPACE = uuid.UUID("6f2b7c1e-5d0a-4f53-9a53-7e2f0c9e4b11")
#: PS3.5 9.1: digits and dots, components without leading zeros, at most 64 characters.
_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def new_uid() -> str:
    """``2.25.<random 128-bit integer>`` (PS3.5 B.2)."""
    return f"{UID_ROOT}{uuid.uuid4().int}"


def derived_uid(*parts: str) -> str:
    """``2.25.<UUIDv5 of the parts>``: stable for the same parts, distinct for different ones."""
    name = "\x1f".join(parts)
    return f"{UID_ROOT}{uuid.uuid5(_NAMESPACE, name).int}"


def is_valid_uid(value: object) -> bool:
    """True if ``value`` is a syntactically valid UID (PS3.5 9.1): digits and dots, <= 64 characters."""
    return isinstance(value, str) and 0 < len(value) <= 64 and _UID_RE.match(value) is not None

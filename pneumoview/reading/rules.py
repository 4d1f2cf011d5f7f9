"""Readers, blinding, the final-determination rule and the arbitration queue (no Qt, no SQL).

* A reader signs in by name (:func:`reader_name` checks and normalises it); readings are
  submitted per study and reader, history kept, the latest reading of each reader counts.
* Blinding: :func:`visible_readings` shows a reader the other readers' readings of a study only
  once their own reading of that study is submitted.
* The final determination (:class:`FinalRule`, :func:`determine`): the first two readers of a
  study (in submission order) are compared; when they agree under the rule the determination is
  final, otherwise the study waits in the arbitration queue until a third reader reads it, whose
  reading then decides. The default rule, usual in pneumoconiosis surveillance programmes, asks for
  agreement on the major category as "0 vs 1/2/3" (profusion below or from 1/0) and on large
  opacities (0/A/B/C); ``agree_on="major"`` asks for the same major category 0/1/2/3.
  Two radiographs graded unacceptable (quality 4) are final as "unreadable". A clinic's rule is
  data: :func:`load_final_rule` reads it from JSON (``pneumoview readings export --rule``).
* :class:`AiSuggestion`: the model's output as shown beside the form. It is never part of a
  :class:`~pneumoview.reading.ilo.Reading`; a submitted reading only remembers which stored result
  (``result_id``) was on screen.
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pneumoview.errors import ReadingError
from pneumoview.labels import DEMO_MARK
from pneumoview.reading.ilo import Reading

MAX_NAME = 64
FINAL, ARBITRATION, PENDING = "final", "needs-arbitration", "pending"
UNREADABLE = "unreadable"


def reader_name(name: str) -> str:
    """A reader's sign-in name, trimmed, inner whitespace collapsed, NFC; refuses empty, over
    64 characters, or with control characters."""
    text = " ".join(unicodedata.normalize("NFC", str(name)).split())
    if not text:
        raise ReadingError("enter your name to sign in", field="reader")
    if len(text) > MAX_NAME:
        raise ReadingError(f"a reader's name has at most {MAX_NAME} characters", field="reader")
    if any(unicodedata.category(c).startswith("C") for c in text):
        raise ReadingError("a reader's name cannot contain control characters", field="reader")
    return text


@dataclass(frozen=True)
class AiSuggestion:
    """The model's latest output for a study, shown read-only beside the reading form."""

    probability: float
    threshold: float
    label: str = ""
    demo: bool = False
    model_name: str = ""
    result_id: int | None = None

    @property
    def positive(self) -> bool:
        return self.probability >= self.threshold

    def text(self) -> str:
        """``"AI: consistent with pneumoconiosis, 0.83 at operating point 0.50"``."""
        verdict = "consistent with pneumoconiosis" if self.positive else "not consistent with pneumoconiosis"
        line = f"AI: {verdict}, {self.probability:.2f} at operating point {self.threshold:.2f}"
        return f"{DEMO_MARK}. {line}" if self.demo else line


@dataclass(frozen=True)
class SubmittedReading:
    """A reading as stored: who, when, for which study, and which AI result was on screen."""

    id: int
    study_uid: str
    reader: str
    reading: Reading
    submitted_at: str
    result_id: int | None = None


@dataclass(frozen=True)
class FinalRule:
    """What two readers must agree on for a final determination (architecture as data: JSON)."""

    agree_on: Literal["binary", "major"] = "binary"
    large_opacities: bool = True

    def __post_init__(self) -> None:
        if self.agree_on not in ("binary", "major"):
            raise ReadingError(f"agree_on must be 'binary' or 'major', not {self.agree_on!r}", field="final_rule")

    def category(self, reading: Reading) -> str:
        """The value compared: ``"0"``/``"1+"`` (binary) or ``"0"``-``"3"`` (major); ``unreadable``."""
        major = reading.major_category
        if major is None:
            return UNREADABLE
        if self.agree_on == "binary":
            return "1+" if major >= 1 else "0"
        return str(major)

    def key(self, reading: Reading) -> tuple[str, str]:
        large = reading.large_opacities if self.large_opacities and reading.classified else ""
        return self.category(reading), large

    def agree(self, a: Reading, b: Reading) -> bool:
        return self.key(a) == self.key(b)

    def to_json_dict(self) -> dict[str, Any]:
        return {"agree_on": self.agree_on, "large_opacities": self.large_opacities}

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> FinalRule:
        extra = sorted(set(data) - {"agree_on", "large_opacities"})
        if extra:
            raise ReadingError(f"unknown key(s) {', '.join(extra)}", field="final_rule")
        large = data.get("large_opacities", True)
        if not isinstance(large, bool):
            raise ReadingError("large_opacities must be true or false", field="final_rule")
        return cls(agree_on=data.get("agree_on", "binary"), large_opacities=large)


def load_final_rule(path: str | os.PathLike[str]) -> FinalRule:
    """A :class:`FinalRule` from a JSON file such as ``{"agree_on": "major", "large_opacities": true}``."""
    source = Path(path)
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReadingError(
            f"cannot read the final-determination rule {source.name}: {exc}", field="final_rule"
        ) from exc
    if not isinstance(data, dict):
        raise ReadingError(f"{source.name} must hold a JSON object", field="final_rule")
    return FinalRule.from_json_dict(data)


@dataclass(frozen=True)
class FinalDetermination:
    """``status`` is final / needs-arbitration / pending. For a final one, ``category`` is the
    rule's category (``"0"``, ``"1+"``, ``"2"``, ``unreadable``) and ``large_opacities`` the agreed
    or arbitrated value; ``decided_by`` is ``agreement`` or ``arbitration``."""

    study_uid: str
    status: str
    first_readers: tuple[str, ...] = ()
    arbiter: str = ""
    category: str = ""
    large_opacities: str = ""
    decided_by: str = ""

    @property
    def positive(self) -> bool | None:
        """True/False for a final classified determination, None otherwise."""
        if self.status != FINAL or self.category in ("", UNREADABLE):
            return None
        return self.category != "0"

    def text(self) -> str:
        if self.status == PENDING:
            return "pending"
        if self.status == ARBITRATION:
            return "needs arbitration"
        large = f", large opacities {self.large_opacities}" if self.large_opacities else ""
        return f"final ({self.decided_by}): category {self.category}{large}"


def latest_per_reader(readings: Iterable[SubmittedReading]) -> list[SubmittedReading]:
    """Each reader's latest reading, ordered by the reader's FIRST submission (who read first)."""
    first: dict[str, int] = {}
    latest: dict[str, SubmittedReading] = {}
    for r in sorted(readings, key=lambda r: r.id):
        first.setdefault(r.reader, r.id)
        latest[r.reader] = r
    return sorted(latest.values(), key=lambda r: first[r.reader])


def determine(
    study_uid: str, readings: Iterable[SubmittedReading], rule: FinalRule | None = None
) -> FinalDetermination:
    """Apply ``rule`` to a study's readings (any order; extra readings after a decision are ignored)."""
    rule = rule or FinalRule()
    ordered = [r for r in latest_per_reader(readings) if r.study_uid == study_uid]
    if len(ordered) < 2:
        return FinalDetermination(study_uid, PENDING, tuple(r.reader for r in ordered))
    a, b = ordered[0], ordered[1]
    firsts = (a.reader, b.reader)
    if rule.agree(a.reading, b.reading):
        category, large = rule.key(a.reading)
        return FinalDetermination(study_uid, FINAL, firsts, "", category, large, "agreement")
    if len(ordered) < 3:
        return FinalDetermination(study_uid, ARBITRATION, firsts)
    arbiter = ordered[2]
    category, large = rule.key(arbiter.reading)
    return FinalDetermination(study_uid, FINAL, firsts, arbiter.reader, category, large, "arbitration")


def visible_readings(readings: Sequence[SubmittedReading], reader: str) -> list[SubmittedReading]:
    """Blinding: the reader's own readings, and the others' only once the reader has submitted one."""
    own = [r for r in readings if r.reader == reader]
    return list(readings) if own else []


def arbitration_queue(
    by_study: Mapping[str, Sequence[SubmittedReading]], rule: FinalRule | None = None, *, reader: str | None = None
) -> list[FinalDetermination]:
    """Studies whose first two readers disagree and that no third reader has read yet, oldest first.
    With ``reader``, only those that reader may arbitrate (not one of the first two)."""
    queue = []
    for study_uid, readings in by_study.items():
        final = determine(study_uid, readings, rule)
        if final.status == ARBITRATION and (reader is None or reader not in final.first_readers):
            queue.append((min(r.id for r in readings), final))
    return [f for _i, f in sorted(queue, key=lambda item: item[0])]


def check_may_submit(readings: Sequence[SubmittedReading], reader: str, rule: FinalRule | None = None) -> None:
    """Refuse a reading that the workflow does not need: once a study is final, only readers who
    already read it may amend their reading (a new reader would be a fourth opinion nobody asked for)."""
    if not readings:
        return
    final = determine(readings[0].study_uid, readings, rule)
    readers = {r.reader for r in readings}
    if final.status == FINAL and reader not in readers:
        raise ReadingError(f"this study already has a final determination ({final.text()})", field="reader")

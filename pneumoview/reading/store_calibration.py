"""Calibration pairs from the results database: the model's score and the readers' final determination
per study (no Qt, no torch; the scores are the stored results, nothing is analysed again).

One pair per study that has

* a **final** determination under the final-determination rule (:func:`pneumoview.reading.rules.determine`:
  two readers agreeing, or an arbiter after they disagreed), classified (not "unreadable"): the major
  category 0 is negative, 1/2/3 positive (ILO 2022; a ``1+`` of the binary rule is positive);
* at least one analysed result of **the bundle being calibrated** (its weights' SHA-256): the study's
  score is the highest of its images' latest results of that bundle (a study is screened positive
  when any of its radiographs is, as :meth:`ReadingRepository.ai_suggestion` shows it). Results of
  other bundles are never mixed in.

Every study with readings that gives no pair is counted under the reason it was left out
(:data:`EXCLUSION_REASONS`), so the data summary says what the figures rest on. Patient IDs are
kept in memory for the bootstrap (by patient) and never written; the summary holds only counts and
a hash of the study list.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pneumoview.errors import CalibrationError
from pneumoview.reading.repository import ReadingRepository
from pneumoview.reading.rules import FINAL, PENDING, FinalRule, determine
from pneumoview.store import ResultStore

#: Fewest pairs a calibration from the store accepts (each class must also be present).
MIN_PAIRS = 10
#: Why a study with readings gives no pair (the keys of the summary's ``excluded``).
EXCLUSION_REASONS = {
    "pending": "fewer than two readers",
    "needs_arbitration": "the first two readers disagree and no arbiter has read it",
    "unreadable": "final, but graded unacceptable (film quality 4): not classified",
    "no_ai_result": "final, but no analysed result of any model",
    "other_models_only": "final, but analysed only by other models than the one calibrated",
}


@dataclass
class StorePairs:
    """Scores and final determinations, one per study, and what they are (no patient data in ``summary``)."""

    scores: np.ndarray  # float64 [n]: the study's highest P(pneumoconiosis) of this bundle
    positive: np.ndarray  # bool [n]: final determination 1/2/3 (True) or 0 (False)
    studies: list[str] = field(default_factory=list)  # Study Instance UIDs, in pair order (in memory only)
    groups: list[str] = field(default_factory=list)  # patient IDs, for the bootstrap (in memory only)
    summary: dict[str, Any] = field(default_factory=dict)


def pairs_from_store(
    store: ResultStore, bundle_fingerprint: str, *, rule: FinalRule | None = None, minimum: int = MIN_PAIRS
) -> StorePairs:
    """The calibration pairs of ``bundle_fingerprint`` in ``store`` (see the module's text).

    Raises CalibrationError (one line) when there are fewer than ``minimum`` pairs or only one class.
    """
    if not bundle_fingerprint:
        raise CalibrationError("the model to calibrate has no weights fingerprint")
    repository = ReadingRepository(store, rule)
    by_study = repository.by_study()
    scores: dict[str, float] = {}
    patients: dict[str, str] = {}
    below_gate: set[str] = set()
    for info, result in store.model_results(bundle_fingerprint):
        if not info.study_uid or result.probability is None:
            continue
        if result.probability >= scores.get(info.study_uid, -1.0):
            scores[info.study_uid] = result.probability
        patients.setdefault(info.study_uid, info.patient_id)
        if result.below_quality_gate:
            below_gate.add(info.study_uid)
    analysed_by = store.study_model_fingerprints()
    excluded = dict.fromkeys(EXCLUSION_REASONS, 0)
    chosen: list[tuple[str, float, bool]] = []
    for study_uid, readings in sorted(by_study.items()):
        final = determine(study_uid, readings, repository.rule)
        reason = _exclusion(final.status, final.positive, study_uid in scores, bool(analysed_by.get(study_uid)))
        if reason:
            excluded[reason] += 1
            continue
        assert final.positive is not None
        chosen.append((study_uid, scores[study_uid], final.positive))
    pairs = StorePairs(
        scores=np.asarray([s for _u, s, _p in chosen], dtype=np.float64),
        positive=np.asarray([p for _u, _s, p in chosen], dtype=bool),
        studies=[u for u, _s, _p in chosen],
        groups=[patients.get(u, "") or u for u, _s, _p in chosen],
    )
    pairs.summary = _summary(pairs, repository.rule, excluded, len(by_study), below_gate)
    _check_usable(pairs, minimum)
    return pairs


def _exclusion(status: str, positive: bool | None, scored: bool, analysed_by_any: bool) -> str:
    """The key of :data:`EXCLUSION_REASONS` that leaves a study out, "" when it gives a pair."""
    if status != FINAL:
        return "pending" if status == PENDING else "needs_arbitration"
    if positive is None:
        return "unreadable"
    if not scored:
        return "other_models_only" if analysed_by_any else "no_ai_result"
    return ""


def _summary(
    pairs: StorePairs, rule: FinalRule, excluded: dict[str, int], with_readings: int, below_gate: set[str]
) -> dict[str, Any]:
    listing = hashlib.sha256()
    for study_uid, positive in zip(pairs.studies, pairs.positive, strict=True):
        listing.update(f"{study_uid}\t{int(positive)}\n".encode())
    n_pos = int(pairs.positive.sum())
    return {
        "source": "store",
        "source_description": "final readings in the results database (one pair per study)",
        "n": int(pairs.positive.size),
        "n_positive": n_pos,
        "n_negative": int(pairs.positive.size - n_pos),
        "n_patients": len(set(pairs.groups)),
        "studies_with_readings": with_readings,
        "excluded": excluded,
        "excluded_total": sum(excluded.values()),
        "exclusion_reasons": dict(EXCLUSION_REASONS),
        "below_quality_gate": len(below_gate & set(pairs.studies)),
        "final_rule": rule.to_json_dict(),
        "study_list_sha256": listing.hexdigest(),
    }


def _check_usable(pairs: StorePairs, minimum: int) -> None:
    n = int(pairs.positive.size)
    left_out = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in pairs.summary["excluded"].items() if v)
    if n < minimum:
        raise CalibrationError(
            f"the store has {n} studies with a final reading and a result of this model, at least {minimum} "
            f"are needed" + (f" (left out: {left_out})" if left_out else "")
        )
    n_pos = int(pairs.positive.sum())
    if n_pos in (0, n):
        raise CalibrationError(
            f"the store's final readings give one class only ({n_pos} with pneumoconiosis, {n - n_pos} normal): "
            "calibration needs both"
        )

"""Kappa against hand-computed tables (the arithmetic is written out in each test)."""

from __future__ import annotations

import numpy as np
import pytest

from pneumoview.reading.agreement import BINARY, MAJOR, all_pairs, confusion, kappa, reader_pair, reader_vs_ai
from pneumoview.reading.ilo import PROFUSION, Reading
from pneumoview.reading.rules import AiSuggestion, SubmittedReading


def _reading(profusion: str) -> Reading:
    shapes = (
        {}
        if profusion in ("0/-", "0/0", "0/1")
        else {"primary_shape": "p", "secondary_shape": "p", "zones": frozenset({"RM"})}
    )
    return Reading(film_quality=1, profusion=profusion, **shapes).validate()


def _readings(reader: str, profusions: list[str], start: int) -> list[SubmittedReading]:
    return [SubmittedReading(start + i, f"s{i}", reader, _reading(p), "t") for i, p in enumerate(profusions)]


def test_cohen_kappa_2x2() -> None:
    # n = 50; p_o = (20 + 15) / 50 = 0.7
    # rows 25/50, 25/50; columns 30/50, 20/50 -> p_e = 0.5*0.6 + 0.5*0.4 = 0.5
    # kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4
    assert kappa(np.array([[20, 5], [10, 15]])) == pytest.approx(0.4)


def test_weighted_kappa_3x3() -> None:
    table = np.array([[10, 2, 0], [3, 8, 2], [0, 1, 4]])  # n = 30; rows 12 13 5; columns 13 11 6
    # sum of r_i*c_j on the diagonal: 12*13 + 13*11 + 5*6 = 329; one step off: 12*11 + 13*13 + 13*6 + 5*11 = 434
    # unweighted: p_o = 22/30 = 660/900, p_e = 329/900 -> (660 - 329) / (900 - 329) = 331/571
    assert kappa(table) == pytest.approx(331 / 571)
    # linear (w = 1, 0.5, 0): p_o = (22 + 0.5*8)/30 = 780/900; p_e = (329 + 0.5*434)/900 = 546/900
    # -> (780 - 546) / (900 - 546) = 234/354
    assert kappa(table, "linear") == pytest.approx(234 / 354)
    # quadratic (w = 1, 0.75, 0): p_o = (22 + 0.75*8)/30 = 840/900; p_e = (329 + 0.75*434)/900 = 654.5/900
    # -> 185.5 / 245.5
    assert kappa(table, "quadratic") == pytest.approx(185.5 / 245.5)


def test_kappa_undefined_and_bad_weights() -> None:
    assert kappa(np.array([[7, 0], [0, 0]])) is None  # both raters always "0": p_e = 1
    assert kappa(np.zeros((2, 2))) is None
    with pytest.raises(ValueError):
        kappa(np.eye(2), "cubic")


def test_confusion_orientation() -> None:
    table = confusion(["0", "1+", "1+"], ["0", "0", "1+"], BINARY)
    assert table.tolist() == [[1, 0], [1, 1]]  # rows: rater A, columns: rater B


def test_reader_pair_on_the_12_point_scale() -> None:
    # profusion pairs (A, B): 0/0-0/0, 1/0-1/1, 2/2-2/2, 0/1-1/0 (scale indices 1-1, 3-4, 7-7, 2-3)
    readings = _readings("A", ["0/0", "1/0", "2/2", "0/1"], 1) + _readings("B", ["0/0", "1/1", "2/2", "1/0"], 10)
    agreement = reader_pair(readings, "A", "B")
    assert agreement.n == 4
    # major: A 0 1 2 0, B 0 1 2 1 -> p_o = 3/4; A marginal 2/4 1/4 1/4 0, B 1/4 2/4 1/4 0
    # p_e = 0.5*0.25 + 0.25*0.5 + 0.25*0.25 = 0.3125 -> kappa = 0.4375 / 0.6875 = 7/11
    assert agreement.major_table[0, 1] == 1 and int(agreement.major_table.sum()) == 4
    assert agreement.kappa_major == pytest.approx(7 / 11)
    assert agreement.observed == pytest.approx(0.75)
    p = agreement.profusion_table
    assert p is not None and p.shape == (12, 12)
    assert p[PROFUSION.index("0/1"), PROFUSION.index("1/0")] == 1
    # linear, k = 12, w = 1 - d/11: observed d = 0 1 0 1 -> p_o = (2 + 2*10/11)/4 = 42/44
    # expected: A in {1,2,3,7}, B in {1,3,4,7}, each 1/4; sum of |a-b| over the 16 cells = 11+9+7+13 = 40
    # p_e = 1 - 40/(16*11) = 34/44 -> kappa = (42 - 34)/(44 - 34) = 0.8
    assert agreement.kappa_linear == pytest.approx(0.8)
    # quadratic, w = 1 - d^2/121: p_o = 1 - 2/(4*121) = 1 - 8/1936; sum of d^2 = 49+31+21+61 = 162
    # p_e = 1 - 162/1936 -> kappa = (162 - 8)/162
    assert agreement.kappa_quadratic == pytest.approx(154 / 162)
    assert [(a.rater_a, a.rater_b) for a in all_pairs(readings)] == [("A", "B")]


def test_reader_vs_ai_is_binary_and_skips_unreadable() -> None:
    readings = _readings("A", ["1/0", "2/2", "1/1", "0/0", "0/1"], 1)
    readings.append(SubmittedReading(99, "s5", "A", Reading(film_quality=4, film_quality_reason="blur"), "t"))
    ai = {f"s{i}": AiSuggestion(p, 0.5) for i, p in enumerate([0.9, 0.7, 0.3, 0.2, 0.1, 0.95])}
    agreement = reader_vs_ai(readings, ai, "A")
    # reader 1+ 1+ 1+ 0 0, AI 1+ 1+ 0 0 0 (s5 unreadable: left out) -> table [[2, 0], [1, 2]]
    assert agreement.n == 5 and agreement.major_categories == BINARY
    assert agreement.major_table.tolist() == [[2, 0], [1, 2]]
    # p_o = 4/5; reader 2/5 3/5, AI 3/5 2/5 -> p_e = 0.4*0.6 + 0.6*0.4 = 0.48 -> kappa = 0.32/0.52 = 8/13
    assert agreement.kappa_major == pytest.approx(8 / 13)
    assert MAJOR == ("0", "1", "2", "3")

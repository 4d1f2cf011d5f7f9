from __future__ import annotations

from pneumoview.pacs.uids import UID_ROOT, derived_uid, is_valid_uid, new_uid


def test_new_uids_follow_the_2_25_rule_and_differ() -> None:
    uids = {new_uid() for _ in range(200)}
    assert len(uids) == 200
    assert all(u.startswith(UID_ROOT) and is_valid_uid(u) and len(u) <= 64 for u in uids)


def test_derived_uid_is_stable_per_parts() -> None:
    assert derived_uid("sr", "1.2.3", "abc") == derived_uid("sr", "1.2.3", "abc")
    assert derived_uid("sr", "1.2.3", "abc") != derived_uid("sc", "1.2.3", "abc")
    assert derived_uid("a", "bc") != derived_uid("ab", "c")  # parts are separated, not concatenated
    assert is_valid_uid(derived_uid("x"))


def test_is_valid_uid_refuses_hostile_values() -> None:
    for bad in ("../../x", "1.2..3", "1.02.3", "1." + "1" * 70, "", "1.2.3/4", "1.2.3\x00", None, 12):
        assert not is_valid_uid(bad), bad


def test_uids_are_created_in_one_place_only() -> None:
    from pathlib import Path

    package = Path(__file__).resolve().parents[2] / "pneumoview"
    offenders = [
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if p.name != "uids.py"
        and ("generate_uid" in p.read_text(encoding="utf-8") or "uuid4().int" in p.read_text(encoding="utf-8"))
    ]
    assert offenders == []

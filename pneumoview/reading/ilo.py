"""The ILO International Classification of Radiographs of Pneumoconioses (2022 revision) as data.

A :class:`Reading` is one reader's complete classification of one postero-anterior chest
radiograph, in the order of the ILO reading sheet (Guidelines, revised edition 2022, chapter 3
"Specific instructions for use of the Complete Classification"):

* 3.1 technical quality, grade 1-4;
* 3.2 parenchymal abnormalities: small opacities (shape/size p q r rounded, s t u irregular,
  primary/secondary), the six zones where they are seen, profusion on the 12-point scale, and
  large opacities 0/A/B/C;
* 3.3 pleural abnormalities: plaques (chest wall in profile and face on, diaphragm, other sites;
  right/left; calcification; extent 1-3 and width a-c for chest-wall plaques), costophrenic angle
  obliteration, diffuse pleural thickening (same details, chest wall only);
* 3.4 the symbols; 3.5 comments.

:meth:`Reading.problems` lists every rule a reading breaks (each a
:class:`~pneumoview.errors.ReadingValidationError` naming the form field); :meth:`Reading.validate`
raises the first. The rules, each cited where it is checked:

* quality other than 1 needs the defect described (3.1; the reading sheet asks for it);
* quality 4 (unacceptable) is not classified: no findings may be recorded (3.1);
* quality 1-3 needs a profusion (3.2, "profusion ... is classified on the 12-point scale");
* 0/- and 0/0 mean no small opacities: no shape or zone may be recorded; from 1/0 up, a primary
  and a secondary shape/size (the same letter twice when one kind predominates) and at least one
  zone are required; at 0/1 they are optional but shapes and zones go together (3.2);
* large opacities are 0, A, B or C (3.2);
* a calcification is recorded only where a plaque is recorded at that site and side ("when only
  calcification is seen, a plaque is also recorded as present at that site", 3.3);
* extent 1-3 is recorded for a side exactly when there is chest-wall thickening (in profile or
  face on) on that side; width a-c only for thickening seen in profile on that side, and it is
  optional (3.3: "face-on plaques are not classified in terms of width", width optional since 2011);
* diffuse pleural thickening of the chest wall is recorded in a hemithorax only in the presence of,
  and in continuity with, an obliterated costophrenic angle on that side (3.3);
* symbol ``ax`` (coalescence of small opacities) needs small opacities of profusion 1/0 or more,
  and ``od`` (other disease) needs a comment saying which (3.4).

A reading never holds the AI's output: the AI suggestion is kept apart (see ``rules.AiSuggestion``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pneumoview.errors import ReadingValidationError

#: Technical quality grades (3.1).
FILM_QUALITY: dict[int, str] = {
    1: "good",
    2: "acceptable, no technical defect likely to impair classification",
    3: "acceptable, with some technical defect but still adequate for classification",
    4: "unacceptable",
}
#: The 12-point profusion scale, lowest first (3.2).
PROFUSION: tuple[str, ...] = (
    "0/-",
    "0/0",
    "0/1",
    "1/0",
    "1/1",
    "1/2",
    "2/1",
    "2/2",
    "2/3",
    "3/2",
    "3/3",
    "3/+",
)
#: Shape/size letters: p q r rounded (up to 1.5, 1.5-3, 3-10 mm), s t u irregular (3.2).
SHAPES: tuple[str, ...] = ("p", "q", "r", "s", "t", "u")
#: Zones: right/left x upper/middle/lower (3.2).
ZONES: tuple[str, ...] = ("RU", "RM", "RL", "LU", "LM", "LL")
ZONE_NAMES: dict[str, str] = {
    "RU": "right upper",
    "RM": "right middle",
    "RL": "right lower",
    "LU": "left upper",
    "LM": "left middle",
    "LL": "left lower",
}
#: Large opacities: none, A (<= 50 mm), B, C (> right upper zone) (3.2).
LARGE_OPACITIES: tuple[str, ...] = ("0", "A", "B", "C")
SIDES: tuple[str, ...] = ("R", "L")
#: Sites of pleural thickening (3.3); diffuse thickening is recorded on the chest wall only.
PLAQUE_SITES: tuple[str, ...] = ("in_profile", "face_on", "diaphragm", "other")
DIFFUSE_SITES: tuple[str, ...] = ("in_profile", "face_on")
SITE_NAMES: dict[str, str] = {
    "in_profile": "chest wall in profile",
    "face_on": "chest wall face on",
    "diaphragm": "diaphragm",
    "other": "other sites",
}
#: Extent along the lateral chest wall: 1 (< 1/4), 2 (1/4-1/2), 3 (> 1/2) (3.3).
EXTENTS: tuple[int, ...] = (1, 2, 3)
#: Width of in-profile thickening: a (3-5 mm), b (5-10 mm), c (> 10 mm) (3.3).
WIDTHS: tuple[str, ...] = ("a", "b", "c")
#: The obligatory symbols (3.4), in the reading sheet's order.
SYMBOLS: dict[str, str] = {
    "aa": "atherosclerotic aorta",
    "at": "significant apical pleural thickening",
    "ax": "coalescence of small opacities",
    "bu": "bulla(e)",
    "ca": "cancer of the lung (excluding mesothelioma)",
    "cg": "calcified non-pneumoconiotic nodules",
    "cn": "calcification in small pneumoconiotic opacities",
    "co": "abnormality of cardiac size or shape",
    "cp": "cor pulmonale",
    "cv": "cavity",
    "di": "marked distortion of an intrathoracic structure",
    "ef": "pleural effusion",
    "em": "emphysema",
    "es": "eggshell calcification of hilar or mediastinal lymph nodes",
    "fr": "fractured rib(s)",
    "hi": "enlargement of hilar or mediastinal lymph nodes",
    "ho": "honeycomb lung",
    "id": "ill-defined diaphragm border",
    "ih": "ill-defined heart border",
    "kl": "septal (Kerley) lines",
    "me": "mesothelioma",
    "pa": "plate atelectasis",
    "pb": "parenchymal bands",
    "pi": "pleural thickening of an interlobar fissure",
    "px": "pneumothorax",
    "ra": "rounded atelectasis",
    "rp": "rheumatoid pneumoconiosis",
    "tb": "tuberculosis",
    "od": "other disease or significant abnormality",
}
#: Major category of each profusion subcategory: the number before the slash.
MAJOR_CATEGORY: dict[str, int] = {p: int(p[0]) for p in PROFUSION}


def major_category(profusion: str | None) -> int | None:
    """0-3 for a profusion subcategory (``"2/1"`` -> 2), None for no profusion (quality 4)."""
    return None if profusion is None else MAJOR_CATEGORY[profusion]


@dataclass(frozen=True)
class PleuralThickening:
    """Plaques or diffuse thickening (3.3): sides per site, calcified sides per site, extent and
    width per side. Sides are subsets of :data:`SIDES`; ``extent``/``width`` map a side to its grade."""

    sites: Mapping[str, frozenset[str]] = field(default_factory=dict)
    calcification: Mapping[str, frozenset[str]] = field(default_factory=dict)
    extent: Mapping[str, int] = field(default_factory=dict)
    width: Mapping[str, str] = field(default_factory=dict)

    def sides(self, site: str) -> frozenset[str]:
        return frozenset(self.sites.get(site, frozenset()))

    def calcified(self, site: str) -> frozenset[str]:
        return frozenset(self.calcification.get(site, frozenset()))

    @property
    def present(self) -> bool:
        return any(self.sites.get(s) for s in PLAQUE_SITES)

    def chest_wall_sides(self) -> frozenset[str]:
        return self.sides("in_profile") | self.sides("face_on")

    def summary(self) -> str:
        """``"in profile R L (calc. L), extent R1 L2, width La"``-like text; ``""`` when absent."""
        parts = []
        for site in PLAQUE_SITES:
            sides = self.sides(site)
            if sides:
                calc = self.calcified(site)
                text = f"{SITE_NAMES[site]} {' '.join(s for s in SIDES if s in sides)}"
                parts.append(text + (f" (calcified {' '.join(s for s in SIDES if s in calc)})" if calc else ""))
        if self.extent:
            parts.append("extent " + " ".join(f"{s}{self.extent[s]}" for s in SIDES if s in self.extent))
        if self.width:
            parts.append("width " + " ".join(f"{s}{self.width[s]}" for s in SIDES if s in self.width))
        return ", ".join(parts)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "sites": {k: sorted(v) for k, v in sorted(self.sites.items()) if v},
            "calcification": {k: sorted(v) for k, v in sorted(self.calcification.items()) if v},
            "extent": {k: int(v) for k, v in sorted(self.extent.items())},
            "width": {k: str(v) for k, v in sorted(self.width.items())},
        }

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any], *, name: str) -> PleuralThickening:
        _only_keys(data, {"sites", "calcification", "extent", "width"}, name)

        def side_map(key: str) -> dict[str, frozenset[str]]:
            raw = data.get(key, {})
            if not isinstance(raw, Mapping):
                raise ReadingValidationError("must be an object", field=f"{name}.{key}")
            return {str(k): frozenset(_str_list(v, f"{name}.{key}.{k}")) for k, v in raw.items()}

        extent = data.get("extent", {})
        width = data.get("width", {})
        if not isinstance(extent, Mapping) or not isinstance(width, Mapping):
            raise ReadingValidationError("extent and width must be objects", field=name)
        for side, grade in extent.items():
            if isinstance(grade, bool) or not isinstance(grade, int):
                raise ReadingValidationError(f"extent must be 1, 2 or 3, not {grade!r}", field=f"{name}.extent.{side}")
        return cls(
            sites=side_map("sites"),
            calcification=side_map("calcification"),
            extent={str(k): v for k, v in extent.items()},
            width={str(k): str(v) for k, v in width.items()},
        )


@dataclass(frozen=True)
class Reading:
    """One reader's ILO classification of one radiograph (see the module docstring for the rules)."""

    film_quality: int
    film_quality_reason: str = ""
    profusion: str | None = None
    primary_shape: str | None = None
    secondary_shape: str | None = None
    zones: frozenset[str] = frozenset()
    large_opacities: str = "0"
    plaques: PleuralThickening = field(default_factory=PleuralThickening)
    costophrenic_obliteration: frozenset[str] = frozenset()
    diffuse_thickening: PleuralThickening = field(default_factory=PleuralThickening)
    symbols: frozenset[str] = frozenset()
    comments: str = ""

    # -- derived -------------------------------------------------------------
    @property
    def major_category(self) -> int | None:
        return major_category(self.profusion)

    @property
    def classified(self) -> bool:
        """False for an unacceptable radiograph (quality 4), which is not classified."""
        return self.film_quality != 4

    @property
    def small_opacities(self) -> bool:
        """Small opacities consistent with pneumoconiosis: profusion 1/0 or more."""
        return (self.major_category or 0) >= 1

    @property
    def parenchymal_abnormalities(self) -> bool:
        return self.small_opacities or self.large_opacities != "0"

    @property
    def pleural_abnormalities(self) -> bool:
        return self.plaques.present or bool(self.costophrenic_obliteration) or self.diffuse_thickening.present

    # -- validation ------------------------------------------------------------
    def problems(self) -> list[ReadingValidationError]:
        """Every rule this reading breaks, in form order (empty when it is valid)."""
        return list(self._check())

    def validate(self) -> Reading:
        """Raise the first :class:`ReadingValidationError`; returns ``self`` when valid."""
        for problem in self._check():
            raise problem
        return self

    def _check(self) -> Iterator[ReadingValidationError]:
        yield from _check_quality(self)
        if self.film_quality not in FILM_QUALITY:
            return
        if not self.classified:
            yield from _check_unclassified(self)
            return
        yield from _check_parenchyma(self)
        yield from _check_pleura(self.plaques, "plaques", PLAQUE_SITES)
        yield from _check_sides(self.costophrenic_obliteration, "costophrenic_obliteration")
        yield from _check_pleura(self.diffuse_thickening, "diffuse_thickening", DIFFUSE_SITES)
        # 3.3: diffuse thickening only in continuity with an obliterated costophrenic angle.
        for side in sorted(self.diffuse_thickening.chest_wall_sides() - self.costophrenic_obliteration):
            yield ReadingValidationError(
                f"diffuse pleural thickening on side {side} needs costophrenic angle obliteration on that side",
                field="diffuse_thickening",
            )
        yield from _check_symbols(self)
        if len(self.comments) > 2000:
            yield ReadingValidationError("at most 2000 characters", field="comments")

    # -- JSON --------------------------------------------------------------------
    def to_json_dict(self) -> dict[str, Any]:
        return {
            "film_quality": self.film_quality,
            "film_quality_reason": self.film_quality_reason,
            "profusion": self.profusion,
            "primary_shape": self.primary_shape,
            "secondary_shape": self.secondary_shape,
            "zones": [z for z in ZONES if z in self.zones] + sorted(set(self.zones) - set(ZONES)),
            "large_opacities": self.large_opacities,
            "plaques": self.plaques.to_json_dict(),
            "costophrenic_obliteration": sorted(self.costophrenic_obliteration),
            "diffuse_thickening": self.diffuse_thickening.to_json_dict(),
            "symbols": [s for s in SYMBOLS if s in self.symbols] + sorted(set(self.symbols) - set(SYMBOLS)),
            "comments": self.comments,
        }

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> Reading:
        """Strict inverse of :meth:`to_json_dict`: unknown keys and wrong types are refused, and the
        result is validated."""
        if not isinstance(data, Mapping):
            raise ReadingValidationError("a reading must be a JSON object", field="reading")
        _only_keys(data, {f for f in cls.__dataclass_fields__}, "reading")
        quality = data.get("film_quality")
        if isinstance(quality, bool) or not isinstance(quality, int):
            raise ReadingValidationError(f"must be 1, 2, 3 or 4, not {quality!r}", field="film_quality")
        reading = cls(
            film_quality=quality,
            film_quality_reason=_text(data, "film_quality_reason"),
            profusion=_optional_text(data, "profusion"),
            primary_shape=_optional_text(data, "primary_shape"),
            secondary_shape=_optional_text(data, "secondary_shape"),
            zones=frozenset(_str_list(data.get("zones", []), "zones")),
            large_opacities=_text(data, "large_opacities", "0"),
            plaques=PleuralThickening.from_json_dict(_mapping(data, "plaques"), name="plaques"),
            costophrenic_obliteration=frozenset(
                _str_list(data.get("costophrenic_obliteration", []), "costophrenic_obliteration")
            ),
            diffuse_thickening=PleuralThickening.from_json_dict(
                _mapping(data, "diffuse_thickening"), name="diffuse_thickening"
            ),
            symbols=frozenset(_str_list(data.get("symbols", []), "symbols")),
            comments=_text(data, "comments"),
        )
        return reading.validate()


def normal_reading(film_quality: int = 1, reason: str = "") -> Reading:
    """A radiograph without findings: profusion 0/0, no large opacities, no pleural abnormality."""
    return Reading(film_quality=film_quality, film_quality_reason=reason, profusion="0/0")


# --------------------------------------------------------------------------- checks
def _check_quality(r: Reading) -> Iterator[ReadingValidationError]:
    if r.film_quality not in FILM_QUALITY:
        yield ReadingValidationError(f"must be 1, 2, 3 or 4, not {r.film_quality!r}", field="film_quality")
    elif r.film_quality != 1 and not r.film_quality_reason.strip():
        yield ReadingValidationError(
            f"quality {r.film_quality} needs the technical defect described", field="film_quality_reason"
        )


def _check_unclassified(r: Reading) -> Iterator[ReadingValidationError]:
    """3.1: an unacceptable radiograph (grade 4) is not classified."""
    recorded = {
        "profusion": r.profusion is not None,
        "primary_shape": r.primary_shape is not None,
        "secondary_shape": r.secondary_shape is not None,
        "zones": bool(r.zones),
        "large_opacities": r.large_opacities != "0",
        "plaques": r.plaques.present or bool(r.plaques.extent or r.plaques.width or r.plaques.calcification),
        "costophrenic_obliteration": bool(r.costophrenic_obliteration),
        "diffuse_thickening": r.diffuse_thickening.present,
        "symbols": bool(r.symbols),
    }
    for name, present in recorded.items():
        if present:
            yield ReadingValidationError("an unacceptable radiograph (quality 4) is not classified", field=name)


def _check_parenchyma(r: Reading) -> Iterator[ReadingValidationError]:
    if r.profusion is None:
        yield ReadingValidationError("choose a profusion on the 12-point scale (0/- ... 3/+)", field="profusion")
    elif r.profusion not in PROFUSION:
        yield ReadingValidationError(f"{r.profusion!r} is not on the 12-point scale", field="profusion")
    for name in ("primary_shape", "secondary_shape"):
        value = getattr(r, name)
        if value is not None and value not in SHAPES:
            yield ReadingValidationError(f"must be one of {' '.join(SHAPES)}, not {value!r}", field=name)
    unknown_zones = sorted(set(r.zones) - set(ZONES))
    if unknown_zones:
        yield ReadingValidationError(f"unknown zone(s) {', '.join(unknown_zones)}", field="zones")
    if r.large_opacities not in LARGE_OPACITIES:
        yield ReadingValidationError(f"must be 0, A, B or C, not {r.large_opacities!r}", field="large_opacities")
    if r.profusion not in PROFUSION:
        return
    has_shape = r.primary_shape is not None or r.secondary_shape is not None
    if r.profusion in ("0/-", "0/0"):
        if has_shape:
            yield ReadingValidationError(
                f"profusion {r.profusion} means no small opacities: no shape/size may be recorded",
                field="primary_shape",
            )
        if r.zones:
            yield ReadingValidationError(
                f"profusion {r.profusion} means no small opacities: no zone may be recorded", field="zones"
            )
        return
    if r.secondary_shape is not None and r.primary_shape is None:
        yield ReadingValidationError("a secondary shape/size needs a primary one", field="primary_shape")
    if r.small_opacities or has_shape or r.zones:
        if r.primary_shape is None:
            yield ReadingValidationError(
                f"profusion {r.profusion} with small opacities needs a primary shape/size", field="primary_shape"
            )
        if r.primary_shape is not None and r.secondary_shape is None:
            yield ReadingValidationError(
                "record the secondary shape/size (the primary letter again when one kind predominates)",
                field="secondary_shape",
            )
        if not r.zones:
            yield ReadingValidationError("small opacities need the zone(s) where they are seen", field="zones")


def _check_sides(sides: Iterable[str], name: str) -> Iterator[ReadingValidationError]:
    bad = sorted(set(sides) - set(SIDES))
    if bad:
        yield ReadingValidationError(f"sides are R and L, not {', '.join(bad)}", field=name)


def _check_pleura(p: PleuralThickening, name: str, allowed: tuple[str, ...]) -> Iterator[ReadingValidationError]:
    for mapping, what in ((p.sites, "sites"), (p.calcification, "calcification")):
        for site, sides in mapping.items():
            if site not in allowed:
                yield ReadingValidationError(
                    f"{site!r} is not a site here ({', '.join(allowed)})", field=f"{name}.{what}"
                )
            yield from _check_sides(sides, f"{name}.{what}")
    for site in allowed:
        lone = sorted(p.calcified(site) - p.sides(site))
        if lone:
            yield ReadingValidationError(
                f"calcification ({SITE_NAMES[site]}, {' '.join(lone)}) is recorded with a plaque at that site and side",
                field=f"{name}.calcification",
            )
    wall = p.chest_wall_sides()
    for side in SIDES:
        grade = p.extent.get(side)
        if grade is None and side in wall:
            yield ReadingValidationError(
                f"chest-wall thickening on side {side} needs its extent (1-3)", field=f"{name}.extent"
            )
        elif grade is not None and side not in wall:
            yield ReadingValidationError(
                f"extent on side {side} needs chest-wall thickening on that side", field=f"{name}.extent"
            )
        elif grade is not None and grade not in EXTENTS:
            yield ReadingValidationError(f"extent must be 1, 2 or 3, not {grade!r}", field=f"{name}.extent")
        width = p.width.get(side)
        if width is not None and side not in p.sides("in_profile"):
            yield ReadingValidationError(
                f"width on side {side} is recorded only for thickening seen in profile on that side",
                field=f"{name}.width",
            )
        elif width is not None and width not in WIDTHS:
            yield ReadingValidationError(f"width must be a, b or c, not {width!r}", field=f"{name}.width")
    for key in set(p.extent) | set(p.width):
        if key not in SIDES:
            yield ReadingValidationError(f"sides are R and L, not {key!r}", field=name)


def _check_symbols(r: Reading) -> Iterator[ReadingValidationError]:
    unknown = sorted(set(r.symbols) - set(SYMBOLS))
    if unknown:
        yield ReadingValidationError(f"unknown symbol(s) {', '.join(unknown)}", field="symbols")
    if "ax" in r.symbols and not r.small_opacities:
        yield ReadingValidationError(
            "ax (coalescence of small opacities) needs small opacities of profusion 1/0 or more", field="symbols"
        )
    if "od" in r.symbols and not r.comments.strip():
        yield ReadingValidationError("od (other disease) needs a comment saying which", field="comments")


# --------------------------------------------------------------------------- JSON helpers
def _only_keys(data: Mapping[str, Any], allowed: set[str], name: str) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise ReadingValidationError(f"unknown key(s) {', '.join(extra)}", field=name)


def _mapping(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise ReadingValidationError("must be an object", field=key)
    return value


def _text(data: Mapping[str, Any], key: str, default: str = "") -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise ReadingValidationError(f"must be text, not {type(value).__name__}", field=key)
    return value


def _optional_text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ReadingValidationError(f"must be text or null, not {type(value).__name__}", field=key)
    return value


def _str_list(value: object, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ReadingValidationError("must be a list of texts", field=name)
    return list(value)

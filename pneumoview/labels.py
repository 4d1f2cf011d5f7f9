"""Label texts shared by the engine, the store, the report and the UI (no torch, no Qt).

Results of the demo model (random weights, for trying the app) must never read like a diagnosis:
everywhere a label is shown or exported it is prefixed with :data:`DEMO_MARK`.
"""

from __future__ import annotations

DEMO_MARK = "DEMO - not a diagnosis"
DECISIONS = ("agree", "disagree", "uncertain")


def plain_label(label: str) -> str:
    """``label`` without any demo mark (``"pneumoconiosis - DEMO - not a diagnosis"`` -> ``"pneumoconiosis"``)."""
    return label.replace(DEMO_MARK, "").strip(" -:\t")


def display_label(label: str, *, demo: bool) -> str:
    """``label`` as shown and exported: ``"DEMO - not a diagnosis: pneumoconiosis"`` for demo results.

    A mark already in the label (as a prefix or the engine's suffix) is not repeated; a label of a
    non-demo result is returned as it is.
    """
    label = label.strip()
    if not demo:
        return label
    plain = plain_label(label)
    return f"{DEMO_MARK}: {plain}" if plain else DEMO_MARK

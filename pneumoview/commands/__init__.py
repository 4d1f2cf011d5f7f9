"""Headless sub-commands of the ``pneumoview`` CLI (one module each)."""

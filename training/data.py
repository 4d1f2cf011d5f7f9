"""Training data, one import away: discovery, crop cache and data check live in their own modules.

* :mod:`pneumoview.labelled_data`: labelled images from a class-per-folder tree or a CSV (:func:`discover`);
* :mod:`training.crops`: the inference preprocessing of each image, cached on disk (:class:`CropCache`);
* :mod:`training.datacheck`: the summary shown before training (:func:`validate`, :func:`require_ok`).
"""

from __future__ import annotations

from pneumoview.labelled_data import (
    CLASS_NAMES,
    CONFLICT,
    DUPLICATE,
    LABEL_ALIASES,
    NO_LUNGS,
    NOT_FRONTAL,
    NOT_REGULAR,
    OUTSIDE,
    RASTER_SUFFIXES,
    SKIPPED_NAMES,
    UNLABELLED,
    UNREADABLE,
    DataProblem,
    Sample,
    discover,
    parse_label,
)
from training.crops import (
    CACHE_FORMAT,
    DECODE_ERRORS,
    FILE_ERRORS,
    PIPELINE_VERSION,
    CropCache,
    PreparedImage,
    default_cache_dir,
    pipeline_fingerprint,
    remove_stale_temp_files,
)
from training.datacheck import DataSummary, PreparedDataset, file_list_hash, require_ok, validate

__all__ = [
    "CACHE_FORMAT",
    "CLASS_NAMES",
    "CONFLICT",
    "DECODE_ERRORS",
    "DUPLICATE",
    "FILE_ERRORS",
    "LABEL_ALIASES",
    "NOT_FRONTAL",
    "NOT_REGULAR",
    "NO_LUNGS",
    "OUTSIDE",
    "PIPELINE_VERSION",
    "RASTER_SUFFIXES",
    "SKIPPED_NAMES",
    "UNLABELLED",
    "UNREADABLE",
    "CropCache",
    "DataProblem",
    "DataSummary",
    "PreparedDataset",
    "PreparedImage",
    "Sample",
    "default_cache_dir",
    "discover",
    "file_list_hash",
    "parse_label",
    "pipeline_fingerprint",
    "remove_stale_temp_files",
    "require_ok",
    "validate",
]

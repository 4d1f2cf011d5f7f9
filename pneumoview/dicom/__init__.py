"""DICOM reading, display and lung-field localisation. Imports neither torch nor Qt."""

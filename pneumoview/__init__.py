"""PneumoView: offline screening of chest radiographs for pneumoconiosis with PneumoLLM."""

__version__ = "0.1.0"

"""The Qt (PySide6) desktop application: the only package that imports PySide6."""

"""PneumoLLM inference engine. torch lives here; the app imports it lazily."""

import os as _os

# Offline, always: set before anything in this package can import transformers / huggingface_hub
# (they read these once, at import). PneumoView never downloads weights; see weights.py.
_os.environ["HF_HUB_OFFLINE"] = "1"
_os.environ["TRANSFORMERS_OFFLINE"] = "1"
_os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

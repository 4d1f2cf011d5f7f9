"""PneumoLLM inference engine. torch lives here; the app imports it lazily."""

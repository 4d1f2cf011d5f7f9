"""Qt-free services that run beside the window: the analysis worker process and its message schema."""

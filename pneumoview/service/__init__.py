"""Qt-free protocols between the app and its child processes (typed messages shared by both sides)."""

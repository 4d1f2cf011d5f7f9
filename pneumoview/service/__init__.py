"""Qt-free protocols between the app and its child processes (typed messages shared by both sides):
the analysis worker (:mod:`.analysis`) and the training child (:mod:`.training`)."""

"""Retraining PneumoLLM's adapters on labelled radiographs (depends on ``pneumoview``, never the reverse).

Modules: ``discovery`` (labelled files from a folder tree or a CSV), ``crops`` (crop cache on the
inference preprocessing path, pipeline fingerprint), ``datacheck`` (the data summary), ``data`` (all
three in one import), ``privacy`` (keyed patient hashes: no PHI in what training writes), ``splits`` (patient-level stratified k-fold), ``base`` (model + frozen base weights), ``loop``
(accelerate training loop, checkpoints, resume), ``checkpoint`` (safetensors + JSON, atomic),
``metrics`` (sensitivity, specificity, accuracy, AUC, AVG), ``report`` (model card, figures,
the new bundle), ``estimate`` (time / memory), ``synthetic`` (a learnable synthetic data set),
``cli`` (``pneumoview train`` / ``python -m training``). See ``training/README.md``.
"""

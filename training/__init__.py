"""Retraining PneumoLLM's adapters on labelled radiographs (depends on ``pneumoview``, never the reverse).

Modules: ``data`` (discovery, validation summary, crop cache on the inference preprocessing path),
``splits`` (patient-level stratified k-fold), ``base`` (model + frozen base weights), ``loop``
(accelerate training loop, checkpoints, resume), ``checkpoint`` (safetensors + JSON, atomic),
``metrics`` (sensitivity, specificity, accuracy, AUC, AVG), ``report`` (model card, figures,
the new bundle), ``estimate`` (time / memory), ``synthetic`` (a learnable synthetic data set),
``cli`` (``pneumoview train`` / ``python -m training``). See ``training/README.md``.
"""

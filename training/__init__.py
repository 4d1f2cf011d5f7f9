"""Retraining PneumoLLM adapters: data, patient-level splits, accelerate loop, metrics, registry."""

"""The one precision vocabulary: every value offered anywhere (settings, CLI, settings dialog) works."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from pneumoview.errors import ConfigError
from pneumoview.precision import Precision, Quantisation, choices, legacy_precision
from pneumoview.settings import PRECISIONS, QUANTISATIONS, Settings, settings_from_dict


def test_parse_accepts_the_vocabulary_and_torch_spellings_only():
    assert Precision.parse("BF16") is Precision.BF16
    assert Precision.parse("bfloat16") is Precision.BF16 and Precision.parse("float32") is Precision.FP32
    assert Quantisation.parse(None) is Quantisation.NONE and Quantisation.parse("INT8") is Quantisation.INT8
    with pytest.raises(ValueError, match="precision must be one of auto, bf16, fp16, fp32"):
        Precision.parse("int8")
    with pytest.raises(ValueError, match="quantisation must be one of"):
        Quantisation.parse("int3")
    assert Quantisation.INT8.bits == 8 and Quantisation.INT4.bits == 4 and Quantisation.NONE.bits is None


def test_settings_and_cli_offer_exactly_the_vocabulary():
    from pneumoview.commands.analyze import configure

    assert list(PRECISIONS) == choices(Precision) and list(QUANTISATIONS) == choices(Quantisation)
    parser = argparse.ArgumentParser()
    configure(parser)
    actions = {a.dest: a for a in parser._actions}
    assert list(actions["precision"].choices) == choices(Precision)
    assert list(actions["quantisation"].choices) == choices(Quantisation)


def test_older_settings_with_int8_as_a_precision_still_load():
    # PneumoView up to 0.1 offered int8 / nf4 as a *precision*; they are quantisations now.
    for old in ("int8", "nf4"):
        settings = settings_from_dict({"precision": old})
        assert settings.precision == "auto" and settings.quantisation == old
    assert legacy_precision("bf16") == ("bf16", None)
    with pytest.raises(ConfigError, match="quantisation"):
        Settings(quantisation="int3").validate()


@pytest.fixture(scope="module")
def demo_paths(tmp_path_factory):
    from pneumoview.inference.demo import ensure_demo_model

    return ensure_demo_model(tmp_path_factory.mktemp("precision") / "demo")


@pytest.mark.slow
@pytest.mark.parametrize("precision", choices(Precision))
def test_every_offered_value_builds_a_plan_and_runs_the_tiny_model_on_cpu(precision, demo_paths, tmp_path, monkeypatch):
    from pneumoview.inference.engine import InferenceEngine

    monkeypatch.setenv("PNEUMOVIEW_HOME", str(tmp_path))
    crops = np.random.default_rng(0).random((2, 224, 224), dtype=np.float32)
    reference = None
    for quantisation in choices(Quantisation):  # every value, including nf4 (4-bit on the CPU)
        engine = InferenceEngine.load(
            demo_paths.bundle,
            clip_path=demo_paths.clip,
            llama_path=demo_paths.llama,
            device="cpu",
            precision=precision,
            quantisation=quantisation,
        )
        assert engine.plan.device == "cpu"
        assert engine.plan.quantisation == {"int8": "int8", "int4": "int4", "nf4": "int4"}.get(quantisation)
        probs = engine.probabilities(crops)
        assert np.all(np.isfinite(probs)) and probs.shape == (2,)
        reference = probs if reference is None else reference
        assert np.abs(probs - reference).max() < 0.02  # same model, another number format

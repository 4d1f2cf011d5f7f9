"""Architecture configs: JSON -> frozen dataclasses, validated, round-tripping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pneumoview.errors import ConfigError
from pneumoview.inference.config import (
    CONFIG_DIR,
    FULL_CONFIG,
    IMAGENET_MEAN,
    IMAGENET_STD,
    TINY_CONFIG,
    PneumoLLMConfig,
    available_configs,
    config_from_dict,
    load_config,
)


def test_shipped_configs_are_listed_and_load() -> None:
    assert {FULL_CONFIG, TINY_CONFIG} <= set(available_configs())
    for name in available_configs():
        config = load_config(name)
        assert isinstance(config, PneumoLLMConfig)
        assert config.name == name  # the file name is the architecture's name


def test_full_config_is_the_spec() -> None:
    c = load_config(FULL_CONFIG)
    v, d = c.vision, c.decoder
    assert (v.image_size, v.patch_size, v.width, v.layers, v.heads) == (224, 14, 1024, 24, 16)
    assert v.quick_gelu is True
    # blocks 4, 8, ..., 24 (1-based) are the source blocks: (i+1) % 4 == 0
    assert v.source_layers == (3, 7, 11, 15, 19, 23)
    assert (d.hidden_size, d.layers, d.heads, d.intermediate_size, d.rms_norm_eps) == (4096, 32, 32, 11008, 1e-6)
    assert (c.adapter.hidden, c.adapter.groups, c.adapter.dropout) == (8, 2, 0.1)
    assert (c.engine.hidden, c.engine.num_tokens, c.projection.hidden) == (12, 4, 128)
    assert c.num_source_tokens == 6 and c.num_diagnosis_tokens == 4 and c.num_tokens == 10
    assert c.class_names == ("pneumoconiosis", "normal")
    assert c.preprocessing.mean == IMAGENET_MEAN and c.preprocessing.std == IMAGENET_STD
    assert c.preprocessing.image_size == 224
    simplified = c.replace(use_engine=False)
    assert simplified.num_tokens == 6 and simplified.num_diagnosis_tokens == 0


def test_tiny_config_has_source_tokens_and_same_preprocessing() -> None:
    c = load_config(TINY_CONFIG)
    assert c.num_source_tokens >= 2
    assert c.vision.image_size == 224 and c.preprocessing == load_config(FULL_CONFIG).preprocessing
    assert c.vision.quick_gelu and c.adapter == load_config(FULL_CONFIG).adapter


@pytest.mark.parametrize("name", [FULL_CONFIG, TINY_CONFIG])
def test_round_trip_through_dict_and_json(name: str) -> None:
    config = load_config(name)
    data = json.loads(json.dumps(config.to_dict()))
    assert config_from_dict(data) == config


def test_load_by_path(tmp_path: Path) -> None:
    data = json.loads((CONFIG_DIR / f"{TINY_CONFIG}.json").read_text())
    data["name"] = "my-variant"
    data["decoder"]["attn_implementation"] = "eager"
    path = tmp_path / "variant.json"
    path.write_text(json.dumps(data))
    config = load_config(path)
    assert config.name == "my-variant" and config.decoder.attn_implementation == "eager"


def test_unknown_name_lists_available() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("pneumollm-huge")
    assert FULL_CONFIG in info.value.reason and TINY_CONFIG in info.value.reason


def test_malformed_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.path == path


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda d: d["vision"].update(widht=3), "unknown key"),
        (lambda d: d["vision"].update(layers="24"), "vision.layers must be an integer"),
        (lambda d: d.update(use_engine="yes"), "use_engine must be true or false"),
        (lambda d: d["preprocessing"].update(mean=[0.5, 0.5]), "must have 3 items"),
        (lambda d: d["vision"].update(width=1000), "not a multiple of head_width"),
        (lambda d: d["vision"].update(source_every=30), "gives no source tokens"),
        (lambda d: d["decoder"].update(attn_implementation="flash"), "attn_implementation"),
        (lambda d: d.update(class_names=["a", "b", "c"]), "class_names"),
        (lambda d: d["preprocessing"].update(image_size=256), "preprocessing.image_size"),
        (lambda d: d.pop("name"), "name"),
    ],
)
def test_invalid_configs_are_refused(change, fragment: str) -> None:
    data = load_config(TINY_CONFIG).to_dict()
    change(data)
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert fragment in info.value.reason


def test_attention_implementation_switch() -> None:
    config = load_config(TINY_CONFIG)
    assert config.with_attn_implementation("eager").decoder.attn_implementation == "eager"
    with pytest.raises(ConfigError):
        config.with_attn_implementation("flex")


def test_configs_are_immutable() -> None:
    config = load_config(TINY_CONFIG)
    with pytest.raises(AttributeError):
        config.vision.width = 5  # type: ignore[misc]


@pytest.mark.parametrize("name", [TINY_CONFIG, FULL_CONFIG])
@pytest.mark.parametrize("use_engine", [True, False])
def test_torch_free_trainable_shapes_agree_with_the_modules(name: str, use_engine: bool) -> None:
    from pneumoview.inference.config import trainable_shapes
    from pneumoview.inference.model import expected_trainable_shapes

    config = load_config(name).replace(use_engine=use_engine)
    assert trainable_shapes(config) == expected_trainable_shapes(config)


def test_the_class_order_is_fixed() -> None:
    data = load_config(TINY_CONFIG).to_dict()
    data["class_names"] = ["normal", "pneumoconiosis"]
    with pytest.raises(ConfigError, match="index 0 is the positive class"):
        config_from_dict(data)


def test_tensor_fit_problems_name_each_kind() -> None:
    from pneumoview.inference.config import tensor_fit_problems

    problems = tensor_fit_problems({"a": (2,), "b": (3,), "x": (1,)}, {"a": (2,), "b": (4,), "c": (1,)})
    assert problems == ["1 missing (e.g. c)", "1 unexpected (e.g. x)", "1 wrong shapes: b (3,) != (4,)"]
    assert tensor_fit_problems({"a": (2,)}, {"a": (2,)}) == []

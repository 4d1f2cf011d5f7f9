"""Settings persistence (atomic JSON in the config folder) and the PNEUMOVIEW_HOME path rules."""

from __future__ import annotations

import json
from pathlib import Path

import platformdirs
import pytest

from pneumoview import paths
from pneumoview.atomic import atomic_open, atomic_write_text
from pneumoview.errors import ConfigError
from pneumoview.settings import (
    MAX_RECENT_FOLDERS,
    ExportOptions,
    Settings,
    ensure_pseudonymise_key,
    load_settings,
    save_settings,
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path / "pvhome"))
    return tmp_path / "pvhome"


def test_paths_default_to_platformdirs_without_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(paths.HOME_ENV, raising=False)
    assert paths.config_dir() == Path(platformdirs.user_config_dir("PneumoView", appauthor=False))
    assert paths.data_dir() == Path(platformdirs.user_data_dir("PneumoView", appauthor=False))
    assert paths.database_path().parent == paths.data_dir()
    assert paths.registry_dir().parent == paths.data_dir()


def test_pneumoview_home_relocates_everything(home: Path) -> None:
    assert paths.settings_path() == home / "config" / "settings.json"
    assert paths.database_path() == home / "data" / "pneumoview.sqlite3"
    assert paths.registry_dir() == home / "data" / "models"


def test_resources_are_found_in_a_checkout() -> None:
    assert paths.resource_path("icons", "pneumoview.svg").is_file()
    assert paths.resource_path("icons", "pneumoview.png").is_file()
    assert paths.resource_path("styles", "pneumoview.qss").is_file()


def test_missing_file_gives_defaults_and_creates_nothing(home: Path) -> None:
    settings = load_settings()
    assert settings == Settings()
    assert settings.threshold == 0.5 and settings.device == "auto" and settings.export.include_names is False
    assert not home.exists()


def test_round_trip_of_every_field(home: Path) -> None:
    settings = Settings(
        clip_path="/models/ViT-L-14.pt",
        llama_path="/models/llama-7b",
        active_bundle="/models/bundle-3",
        device="cpu",
        precision="bf16",
        threshold=0.37,
        reviewer_name="Dr. Zoë Ørsted",
        recent_folders=["/data/a", "/data/b"],
        export=ExportOptions(
            pseudonymise=True, include_names=True, include_source_path=False, delimiter=";", last_directory="/out"
        ),
    )
    written = save_settings(settings)
    assert written == home / "config" / "settings.json"
    assert load_settings() == settings
    raw = json.loads(written.read_text(encoding="utf-8"))
    assert raw["version"] == 1 and raw["reviewer_name"] == "Dr. Zoë Ørsted" and raw["export"]["delimiter"] == ";"


def test_explicit_path_wins_over_home(home: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "s.json"
    save_settings(Settings(reviewer_name="A"), target)
    assert load_settings(target).reviewer_name == "A"
    assert not (home / "config" / "settings.json").exists()


def test_unknown_keys_from_a_newer_version_survive_a_save(home: Path) -> None:
    path = paths.settings_path()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"version": 1, "threshold": 0.6, "future_feature": {"x": [1, 2]}}), encoding="utf-8")
    settings = load_settings()
    assert settings.threshold == 0.6 and settings.extra == {"future_feature": {"x": [1, 2]}}
    settings.reviewer_name = "B"
    save_settings(settings)
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert raw["future_feature"] == {"x": [1, 2]} and raw["reviewer_name"] == "B"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('{"threshold": 1.5}', "threshold"),
        ('{"threshold": true}', "threshold"),
        ('{"device": "tpu"}', "device"),
        ('{"precision": "fp8"}', "precision"),
        ('{"recent_folders": "/x"}', "recent_folders"),
        ('{"export": {"delimiter": "|"}}', "delimiter"),
        ('{"pseudonymise_key": "zz"}', "hexadecimal"),
        ("[1, 2]", "JSON object"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_files_raise_config_error_naming_the_problem(home: Path, content: str, fragment: str) -> None:
    path = paths.settings_path()
    path.parent.mkdir(parents=True)
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert fragment in info.value.reason
    assert info.value.path == path


def test_non_strict_load_keeps_the_corrupt_file_aside(home: Path) -> None:
    path = paths.settings_path()
    path.parent.mkdir(parents=True)
    path.write_text("{truncated", encoding="utf-8")
    assert load_settings(strict=False) == Settings()
    kept = list(path.parent.glob("settings.json.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_text(encoding="utf-8") == "{truncated"
    assert not path.exists()


def test_save_refuses_invalid_settings_and_keeps_the_old_file(home: Path) -> None:
    save_settings(Settings(threshold=0.4))
    with pytest.raises(ConfigError):
        save_settings(Settings(threshold=0.0))
    assert load_settings().threshold == 0.4


def test_pseudonymise_key_is_created_once_and_persisted(home: Path) -> None:
    settings = load_settings()
    key = ensure_pseudonymise_key(settings)
    assert len(key) == 32
    reloaded = load_settings()
    assert ensure_pseudonymise_key(reloaded) == key
    assert Settings().pseudonymise_key == ""  # nothing random hides in the defaults


def test_settings_file_is_private_on_posix(home: Path) -> None:
    import os
    import stat

    written = save_settings(Settings())
    if os.name == "posix":
        assert stat.S_IMODE(written.stat().st_mode) & 0o077 == 0  # holds the pseudonymisation key


def test_recent_folders_most_recent_first_without_duplicates() -> None:
    settings = Settings()
    for i in range(MAX_RECENT_FOLDERS + 3):
        settings.add_recent_folder(f"/data/{i}")
    settings.add_recent_folder("/data/5")
    assert settings.recent_folders[0] == "/data/5"
    assert len(settings.recent_folders) == MAX_RECENT_FOLDERS
    assert len(set(settings.recent_folders)) == MAX_RECENT_FOLDERS


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as handle:
            handle.write("half of the new")
            raise RuntimeError("crash while writing")
    assert target.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]

from __future__ import annotations

from dataclasses import fields

import pytest

from service.settings import Settings, build_parser, env_name, load_settings


def test_every_setting_is_a_flag_and_an_environment_variable() -> None:
    help_text = build_parser({}).format_help()
    for field in fields(Settings):
        assert "--" + field.name.replace("_", "-") in help_text
        assert env_name(field.name) in help_text


def test_flags_beat_environment_beats_defaults() -> None:
    assert load_settings([], {}).port == 8000
    assert load_settings([], {"MNIST_PORT": "9001"}).port == 9001
    assert load_settings(["--port", "9002"], {"MNIST_PORT": "9001"}).port == 9002
    settings = load_settings([], {"MNIST_WORKERS": "2", "MNIST_BATCH_TIMEOUT": "0.01", "MNIST_API_KEY": "k"})
    assert settings.workers == 2 and settings.batch_timeout == 0.01 and settings.api_key == "k"
    assert load_settings([], {"MNIST_API_KEY": ""}).api_key is None


def test_api_key_is_never_printed_in_help() -> None:
    assert "topsecret" not in build_parser({"MNIST_API_KEY": "topsecret"}).format_help()


def test_bad_values_are_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        load_settings([], {"MNIST_MAX_BATCH_SIZE": "0"})
    assert "MNIST_MAX_BATCH_SIZE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        load_settings(["--workers", "-1"], {})

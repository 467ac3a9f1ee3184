"""Config: validation messages name the field; layers merge in the documented order."""
import pytest

from app.config import (AppConfig, Config, EngineConfig, SpeechConfig, build_config,
                        env_layer, parse_config_text)


def test_defaults_are_safe():
    """Guards against binding all interfaces or recording nothing by default."""
    cfg = Config()
    assert cfg.app.host == "127.0.0.1"
    assert cfg.app.record is True
    assert cfg.engine.model == "aurateam/AURA"
    assert cfg.engine.video_window_s == 30 and cfg.engine.float_window_s == 15
    assert cfg.engine.qa_window_groups == 10 and cfg.engine.temperature == 0.0


@pytest.mark.parametrize("cls, kwargs, field", [
    (EngineConfig, dict(device="gpu0"), "engine.device"),
    (EngineConfig, dict(temperature=-1), "engine.temperature"),
    (EngineConfig, dict(backend="vllm"), "engine.backend"),
    (SpeechConfig, dict(tts="festival"), "speech.tts"),
    (SpeechConfig, dict(vad_threshold=2.0), "speech.vad_threshold"),
    (AppConfig, dict(port=0), "app.port"),
    (AppConfig, dict(auth="nopassword"), "app.auth"),
    (AppConfig, dict(ssl_certfile="c.pem"), "app.ssl_certfile"),
])
def test_bad_values_name_the_field(cls, kwargs, field):
    """A bad value must say which setting is wrong, in one line."""
    with pytest.raises(ValueError, match=rf"^{field}: "):
        cls(**kwargs)


def test_layers_later_wins_and_strings_are_coerced():
    """CLI > environment > file > defaults; env strings become typed values."""
    file_layer = parse_config_text("[app]\nport = 8000\nrecord = false\n[engine]\ntemperature = 0.5\n", ".toml")
    env = env_layer({"AURA_APP_PORT": "9000", "HOME": "/root", "AURA_ENGINE_SEED": "7"})
    cli = {"app": {"port": 9100}}
    cfg = build_config(file_layer, env, cli)
    assert cfg.app.port == 9100 and cfg.app.record is False
    assert cfg.engine.temperature == 0.5 and cfg.engine.seed == 7


def test_yaml_and_unknown_keys():
    """Typos in config files are errors, not silently ignored settings."""
    data = parse_config_text("speech:\n  tts: espeak\n", ".yaml")
    assert build_config(data).speech.tts == "espeak"
    with pytest.raises(ValueError, match=r"^speech.ttss: unknown setting"):
        build_config({"speech": {"ttss": "espeak"}})
    with pytest.raises(ValueError, match=r"^audio: unknown config section"):
        build_config({"audio": {}})
    with pytest.raises(ValueError, match=r"^app.port: expected a number"):
        build_config({"app": {"port": "eighty"}})
    with pytest.raises(ValueError, match="unknown AURA_ variable"):
        env_layer({"AURA_PORT": "1"})
    with pytest.raises(ValueError, match="invalid TOML"):
        parse_config_text("[app\n", ".toml")
    with pytest.raises(ValueError, match="expected .toml, .yaml"):
        parse_config_text("", ".ini")

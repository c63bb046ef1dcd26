import pytest

from server.auth import UnsafeBind, check_bind, key_matches
from server.config import load_settings


def test_keys_match_exactly():
    assert key_matches("b", ["a", "b"])
    assert not key_matches("c", ["a", "b"]) and not key_matches("", ["a"]) and not key_matches("a", [])


def test_open_server_only_on_loopback():
    check_bind("127.0.0.1", [], insecure=False)
    check_bind("0.0.0.0", ["key"], insecure=False)
    check_bind("0.0.0.0", [], insecure=True)
    with pytest.raises(UnsafeBind):
        check_bind("0.0.0.0", [], insecure=False)


def test_environment_overrides_the_file(tmp_path, monkeypatch):
    config = tmp_path / "c.yaml"
    config.write_text("port: 1234\napi_keys: [from-file]\nlimits: {max_body_bytes: 5000}\n")
    monkeypatch.setenv("WAI_API_KEYS", "k1, k2")
    monkeypatch.setenv("WAI_LIMITS__MAX_BODY_BYTES", "9000")
    settings = load_settings(config)
    assert settings.port == 1234 and settings.api_keys == ["k1", "k2"]
    assert settings.limits.max_body_bytes == 9000


def test_a_name_served_twice_is_refused(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("models:\n  - {name: a, weights: {path: /x}}\n  - {name: b, aliases: [a], weights: {path: /y}}\n")
    with pytest.raises(ValueError, match="served twice"):
        load_settings(config)

import hashlib

import pytest

from server import errors
from server.auth import KeyRing, UnsafeBind, check_bind
from server.config import KeyConfig, Settings, load_settings


def ring(**settings) -> KeyRing:
    return KeyRing(Settings(**settings))


def test_keys_match_exactly_as_keys_or_digests():
    keys = ring(api_keys=["a", "b"], keys=[{"name": "c", "sha256": hashlib.sha256(b"c").hexdigest()}])
    assert keys.find("b") is not None and keys.find("c") is not None
    assert keys.find("d") is None and keys.find("") is None and keys.find("C") is None
    assert ring().find("a") is None


def test_a_digest_must_be_one():
    with pytest.raises(ValueError):
        KeyConfig(name="x", sha256="not-hex")
    with pytest.raises(ValueError):
        KeyConfig(name="x")  # neither key nor digest


def test_scopes_rate_and_concurrency():
    keys = ring(
        keys=[{"name": "batch", "key": "k", "scopes": ["finetunes"], "requests_per_minute": 2, "max_concurrent": 1}]
    )
    use = keys.find("k")
    assert use is not None and use.may("finetunes") and not use.may("models")
    use.take()
    with pytest.raises(errors.WaiError) as busy:  # one in flight already
        use.take()
    assert (busy.value.status, busy.value.code, busy.value.headers["Retry-After"]) == (429, 3040, "1")
    use.give_back()
    use.take()
    use.give_back()
    with pytest.raises(errors.WaiError) as limited:  # two a minute, both used
        use.take()
    assert limited.value.status == 429 and int(limited.value.headers["Retry-After"]) in range(1, 31)


def test_metrics_key_as_key_or_digest():
    assert ring().opens_metrics(None)
    assert ring(metrics={"api_key": "m"}).opens_metrics("m") and not ring(metrics={"api_key": "m"}).opens_metrics("x")
    digest = hashlib.sha256(b"m").hexdigest()
    assert ring(metrics={"api_key_sha256": digest}).opens_metrics("m")
    assert not ring(metrics={"api_key_sha256": digest}).opens_metrics(None)


def test_open_server_only_on_loopback():
    check_bind("127.0.0.1", False, insecure=False)
    check_bind("0.0.0.0", True, insecure=False)
    check_bind("0.0.0.0", False, insecure=True)
    with pytest.raises(UnsafeBind):
        check_bind("0.0.0.0", False, insecure=False)


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

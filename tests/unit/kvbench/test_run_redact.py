"""Secrets never appear in what kvbench writes: values, URL passwords, bearer tokens, secret keys."""

from __future__ import annotations

from kvbench.redact import MASK, Redactor, is_secret_key


def test_secret_keys_by_word() -> None:
    for key in ("HF_TOKEN", "api_key", "Authorization", "x-api-key", "REDIS_PASSWORD", "client_secret"):
        assert is_secret_key(key), key
    for key in (
        "max_tokens",
        "prompt_tokens",
        "AIBRIX_KV_CACHE_OL_L2_CACHE_KEY_BUILDER",
        "api_key_env",
        "name",
    ):
        assert not is_secret_key(key), key


def test_text_masks_registered_values_url_passwords_and_bearer_tokens() -> None:
    r = Redactor(["Bearer tok-abcdef"])
    out = r.text(
        "h=Bearer tok-abcdef raw=tok-abcdef url=redis://:pw99@127.0.0.1:6379/0 other=Bearer zzzz9999"
    )
    assert "tok-abcdef" not in out and "pw99" not in out and "zzzz9999" not in out
    assert "redis://:***@127.0.0.1:6379/0" in out
    # Very short values are not registered: masking "1" everywhere would destroy the output.
    r.add("1")
    assert r.text("users: 1") == "users: 1"


def test_obj_masks_secret_keys_and_nested_values() -> None:
    r = Redactor()
    r.add_mapping({"HF_TOKEN": "hf_secretvalue", "PLAIN": "redis://u:pass1234@h/0", "X": "1"})
    data = {
        "env": {"HF_TOKEN": "hf_secretvalue", "OTHER": "prefix hf_secretvalue suffix"},
        "headers": {"Authorization": "Bearer whatever"},
        "list": ["redis://u:pass1234@h/0"],
        "api_key_env": "MY_TOKEN",
        "max_tokens": 12,
    }
    out = r.obj(data)
    assert out["env"]["HF_TOKEN"] == MASK
    assert out["env"]["OTHER"] == f"prefix {MASK} suffix"
    assert out["headers"]["Authorization"] == MASK
    assert out["list"] == ["redis://u:***@h/0"]
    assert out["api_key_env"] == "MY_TOKEN" and out["max_tokens"] == 12
    assert data["env"]["HF_TOKEN"] == "hf_secretvalue"  # the input is not modified

"""Secrets in stored job configs: encrypted at rest with Fernet, keys from the settings.

A ``SecretStr``/``SecretBytes`` value of a plugin's Config is stored in ``Job.config`` as the
string ``"fernet:" + token`` (``plugin_host.to_storable`` seals it), and turned back into the
value just before the plugin's Config validates a stored config (``LoadedPlugin.validate``
calls :func:`reveal`), so the engine, ``runplugin --job`` and the forms all see the value and
the database, fixtures dumped from it and the admin never do.

Keys (``cryptography``'s ``MultiFernet``): ``CONFIG_SECRET_KEYS`` (Fernet keys, comma
separated; the first encrypts, all decrypt), or else keys derived from ``SECRET_KEY`` and
``SECRET_KEY_FALLBACKS``. Rotation: put the new key first, keep the old one after it, run
``manage.py rotatesecrets`` (re-encrypts every stored secret with the first key), then drop
the old key. A value stored before encryption existed (plain text) is still read, and sealed
on its next save or by ``rotatesecrets``.
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

PREFIX = "fernet:"


class SecretDecryptError(Exception):
    """A stored secret cannot be decrypted with the configured keys."""


def _derived(secret_key: str) -> bytes:
    # A separate key per purpose: the Fernet key is not the signing key itself.
    digest = hashlib.sha256(b"jobscheduler.config-secrets:" + secret_key.encode()).digest()
    return base64.urlsafe_b64encode(digest)


@lru_cache(maxsize=4)
def _box(keys: tuple[str, ...]) -> MultiFernet:
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(
            "CONFIG_SECRET_KEYS: each key must be a Fernet key (32 url-safe base64 bytes; make one with "
            "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
        ) from exc


def _keys() -> tuple[str, ...]:
    explicit = tuple(getattr(settings, "CONFIG_SECRET_KEYS", ()) or ())
    if explicit:
        return explicit
    secret_keys = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return tuple(_derived(k).decode() for k in secret_keys)


def is_sealed(value: Any) -> bool:
    # Every Fernet token starts with its version byte 0x80, "gAAAAA" in base64: a user's plain
    # text that merely starts with "fernet:" is not mistaken for a secret.
    return isinstance(value, str) and value.startswith(PREFIX + "gAAAAA")


def seal(value: str) -> str:
    """Encrypt one secret for storage (an empty one stays empty: "not set" is no secret)."""
    if not value:
        return value
    if (
        getattr(settings, "SECRET_KEY_IS_DEVELOPMENT", False)
        and not settings.DEBUG
        and not getattr(settings, "CONFIG_SECRET_KEYS", None)
    ):
        # A one-shot command without SECRET_KEY must not store secrets nobody can read later.
        raise ImproperlyConfigured("SECRET_KEY is not set: secrets in job configs cannot be stored without it")
    return PREFIX + _box(_keys()).encrypt(value.encode()).decode()


def open_value(value: str) -> str:
    """Decrypt one stored secret (plain text from before encryption passes through)."""
    if not is_sealed(value):
        return value
    try:
        return _box(_keys()).decrypt(value[len(PREFIX) :].encode()).decode()
    except InvalidToken:
        raise SecretDecryptError(
            "a stored secret cannot be decrypted with the configured keys (was SECRET_KEY or "
            "CONFIG_SECRET_KEYS changed without keeping the old key?); enter the secret again"
        ) from None


def rotate_value(value: str) -> str:
    """Re-encrypt one stored secret with the first key (plain text gets sealed)."""
    if not is_sealed(value):
        return seal(value)
    try:
        return PREFIX + _box(_keys()).rotate(value[len(PREFIX) :].encode()).decode()
    except InvalidToken:
        raise SecretDecryptError("a stored secret cannot be decrypted with the configured keys") from None


def _walk(data: Any, fn: Any) -> Any:
    if isinstance(data, dict):
        return {k: _walk(v, fn) for k, v in data.items()}
    if isinstance(data, list):
        return [_walk(v, fn) for v in data]
    return fn(data) if is_sealed(data) else data


def reveal(config: Any) -> Any:
    """``config`` with every sealed secret decrypted (raises SecretDecryptError)."""
    return _walk(config, open_value)


def rotate(config: Any) -> Any:
    """``config`` with every sealed secret re-encrypted with the first key."""
    return _walk(config, rotate_value)


def sealed_paths(config: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Where ``config`` holds a sealed secret (the pages show those secrets as "set")."""
    if isinstance(config, dict):
        return [p for k, v in config.items() for p in sealed_paths(v, (*path, k))]
    if isinstance(config, list):
        return [p for i, v in enumerate(config) for p in sealed_paths(v, (*path, i))]
    return [path] if is_sealed(config) else []

"""Encryption at rest of what callers said: turn texts and captured fields, in the store and calls.jsonl.

AES-256-GCM (``cryptography``). A sealed value is ``enc:v1:<key id>:<base64 of
nonce + ciphertext>``; the key id (8 hex digits of a hash of the key) picks the
key to open it with, and the call id is bound in as associated data, so a value
moved to another call does not open. Keys come newest first: the first seals,
all open, which is how keys rotate (add a new one in front, keep the old ones
until the calls they sealed are purged). Values written before a key was set
stay readable as they are. Errors name key ids, never keys or plaintext.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import os
import re
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ari_agent.config import StoreSettings
from ari_agent.errors import AgentError, ConfigError
from ari_agent.secretfile import read_secret

PREFIX = "enc:v1:"
KEYS_SETTING = "AGENT_STORE__KEYS"
_NONCE = 12


class DataKeyError(AgentError):
    """A sealed value cannot be opened: its key is not configured, or it was altered."""


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"ari-agent data key id\0" + key).hexdigest()[:8]


def new_key() -> str:
    """A fresh key in the form the setting takes."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")


class DataCipher:
    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("at least one key")
        self._keys = {key_id(k): AESGCM(k) for k in reversed(keys)}
        self.current = key_id(keys[0])

    @property
    def key_ids(self) -> list[str]:
        return list(reversed(self._keys))

    def __repr__(self) -> str:
        return f"DataCipher(key_ids={self.key_ids})"

    @classmethod
    def from_text(cls, text: str) -> DataCipher:
        """Keys separated by commas or whitespace, newest first, each 32 bytes in base64."""
        parts = [p for p in re.split(r"[,\s]+", text) if p]
        keys = []
        for n, part in enumerate(parts, 1):
            try:
                key = base64.b64decode(part.replace("-", "+").replace("_", "/"), validate=True)
            except (binascii.Error, ValueError):
                key = b""
            if len(key) != 32:
                raise ValueError(f"key {n} of {len(parts)} is not 32 bytes in base64")
            keys.append(key)
        if not keys:
            raise ValueError("no key given")
        return cls(keys)

    def seal(self, text: str, call_id: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._keys[self.current].encrypt(nonce, text.encode("utf-8"), call_id.encode("utf-8"))
        return f"{PREFIX}{self.current}:{base64.b64encode(nonce + sealed).decode('ascii')}"

    def open(self, value: str, call_id: str) -> str:
        if not is_sealed(value):
            return value
        kid, _, body = value[len(PREFIX) :].partition(":")
        aes = self._keys.get(kid)
        if aes is None:
            raise DataKeyError(
                f"call {call_id} was encrypted with key {kid}, which is not among the configured keys "
                f"({', '.join(self.key_ids)}); add it to {KEYS_SETTING}"
            )
        try:
            raw = base64.b64decode(body, validate=True)
            return aes.decrypt(raw[:_NONCE], raw[_NONCE:], call_id.encode("utf-8")).decode("utf-8")
        except (InvalidTag, binascii.Error, ValueError):
            raise DataKeyError(
                f"call {call_id}: a value sealed with key {kid} does not open (altered?)"
            ) from None


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def open_value(value: str, cipher: DataCipher | None, call_id: str) -> str:
    """The plaintext of a stored value; sealed with no key configured: DataKeyError."""
    if cipher is None:
        if is_sealed(value):
            raise DataKeyError(
                f"call {call_id} is encrypted and no key is configured: set {KEYS_SETTING} "
                f"(or {KEYS_SETTING}_FILE) to the agent's keys"
            )
        return value
    return cipher.open(value, call_id)


def _map_record(record: dict[str, Any], fn: Any) -> dict[str, Any]:
    out = copy.deepcopy(record)
    call_id = str(out.get("call_id"))
    turns = out.get("turns")
    for turn in turns if isinstance(turns, list) else []:
        if isinstance(turn, dict) and isinstance(turn.get("text"), str):
            turn["text"] = fn(turn["text"], call_id)
        # A tool call's arguments and result are the caller's data, like the turn's text.
        tools = turn.get("tools") if isinstance(turn, dict) else None
        for use in tools if isinstance(tools, list) else []:
            for key in ("arguments", "result"):
                if isinstance(use, dict) and isinstance(use.get(key), str):
                    use[key] = fn(use[key], call_id)
    fields = out.get("fields")
    if isinstance(fields, dict):
        for name, value in fields.items():
            if isinstance(value, str):
                fields[name] = fn(value, call_id)
    return out


def seal_record(record: dict[str, Any], cipher: DataCipher | None) -> dict[str, Any]:
    """A record in its one shape with turn texts and field values sealed (as calls.jsonl keeps it)."""
    return record if cipher is None else _map_record(record, cipher.seal)


def open_record(record: dict[str, Any], cipher: DataCipher | None) -> dict[str, Any]:
    return _map_record(record, lambda value, call_id: open_value(value, cipher, call_id))


def data_cipher(conf: StoreSettings) -> DataCipher | None:
    """The configured keys (setting, ``*_FILE`` or /run/secrets/agent_store_keys); None if none."""
    text = read_secret(
        "store.keys",
        conf.keys.get_secret_value() if conf.keys else None,
        conf.keys_file,
        secrets_name="agent_store_keys",
    )
    if text is None:
        return None
    try:
        return DataCipher.from_text(text)
    except ValueError as exc:
        raise ConfigError(
            "store.keys",
            f"{exc}.",
            f"set {KEYS_SETTING} to keys made with `python -c 'import base64,os; "
            "print(base64.urlsafe_b64encode(os.urandom(32)).decode())'`, newest first, comma-separated",
        ) from None

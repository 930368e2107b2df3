"""Authenticated encryption of small secrets at rest: AES-256-GCM under a key derived from the cluster secret.

A sealed blob is `version (1 byte) | nonce (12 random bytes) | ciphertext + GCM tag`. The caller passes
associated data (for secrets, the secret id) that must be the same to open the blob again, so a blob
copied onto another record fails authentication like a tampered one.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = 1
NONCE_BYTES = 12
TAG_BYTES = 16
_INFO = b"podium secrets v1"  # HKDF label: this key is for nothing but sealing secrets


class SecretBoxError(Exception):
    """No key to seal with, or a blob that cannot be opened (its text never contains secret data)."""


def derive_key(secret_key: str) -> bytes:
    """The 256-bit AES key for a cluster secret key (HKDF-SHA256, fixed label, no salt)."""
    if not secret_key:
        raise SecretBoxError("no cluster secret key is configured")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret_key.encode())


class SecretBox:
    """Seals and opens blobs under one cluster secret key."""

    __slots__ = ("_aead",)

    def __init__(self, secret_key: str) -> None:
        self._aead = AESGCM(derive_key(secret_key))

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return bytes([VERSION]) + nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open_(self, blob: bytes, aad: bytes) -> bytes:
        if len(blob) < 1 + NONCE_BYTES + TAG_BYTES:
            raise SecretBoxError("sealed data is truncated")
        if blob[0] != VERSION:
            raise SecretBoxError(f"sealed data has an unknown format version {blob[0]}")
        nonce, body = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, aad)
        except InvalidTag:
            raise SecretBoxError(
                "sealed data failed authentication (wrong secret key, moved from another record, or altered)"
            ) from None

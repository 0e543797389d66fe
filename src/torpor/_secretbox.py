"""Small secrets sealed under a key derived from the snapshot key-encryption key (KEK).

Used for a project's secret environment variables: at rest in Postgres
("env-at-rest") and on their way to an agent inside a RunSpec, so that no
message carries them in clear ("env-in-transit"). Each purpose has its own key, derived with HKDF-SHA256 from
the KEK, so a value sealed for one never opens as the other. AES-256-GCM, a
random 96-bit nonce per value, and the caller's context (project and name, or
run and generation) as authenticated data: a sealed value copied to another
row or another run does not open.
"""

from __future__ import annotations

import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from torpor._errors import ConfigError, IntegrityError
from torpor._seal import Kek, Keyring

_NONCE = 12


def _key(kek: Kek, purpose: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"torpor/{purpose}/v1".encode()).derive(kek.key)


def seal(kek: Kek, purpose: str, plaintext: bytes, context: str) -> bytes:
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(_key(kek, purpose)).encrypt(nonce, plaintext, context.encode())


def open_sealed(kek: Kek, purpose: str, blob: bytes, context: str) -> bytes:
    """The plaintext; IntegrityError if the blob was altered, belongs elsewhere or is sealed under another key."""
    try:
        return AESGCM(_key(kek, purpose)).decrypt(blob[:_NONCE], blob[_NONCE:], context.encode())
    except (InvalidTag, ValueError):
        raise IntegrityError(f"a sealed {purpose} value does not open with key {kek.id} for {context!r}: "
                             "it was altered, copied from elsewhere, or sealed under another key") from None


# -- a run's environment on its way to the agent ----------------------------------------

IN_TRANSIT = "env-in-transit"


def transit_context(run_id: str, generation: int) -> str:
    return f"{run_id}/{generation}"


def open_run_env(keyring: Keyring | None, spec: Any) -> dict[str, str]:
    """On the agent: a RunSpec's environment, its secrets opened; ConfigError when they cannot be."""
    env = dict(spec.env)
    if spec.sealed_env:
        kek = keyring.find(spec.env_key_id) if keyring is not None else None
        if kek is None:
            raise ConfigError(f"the run's secrets are sealed under snapshot key {spec.env_key_id or '?'}, which this "
                              "agent was not handed")
        blob = open_sealed(kek, IN_TRANSIT, bytes(spec.sealed_env), transit_context(spec.run.run_id,
                                                                                   spec.run.generation))
        env.update(json.loads(blob))
    return env

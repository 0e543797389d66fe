"""A task with a small third-party package (idna), holding a value made before it suspends."""

import secrets

import idna

from torpor import metadata, task, wait


@task(id="idna-hold")
def idna_hold(payload):
    """Draws a nonce, suspends on a token, returns the nonce: a run restarted from scratch draws another."""
    nonce = secrets.token_hex(8)
    metadata.set("nonce", nonce)
    token = wait.create_token(timeout=600)
    metadata.set("token", token.id)
    answer = wait.for_token(token)
    return {"nonce": nonce, "answer": answer, "encoded": idna.encode("bücher.example").decode()}

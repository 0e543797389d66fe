"""S3 settings from the environment (only cli/ reads environment variables)."""

from __future__ import annotations

import os

from torpor.store import S3Options


def s3_options_from_env() -> S3Options:
    """TORPOR_S3_ENDPOINT, TORPOR_S3_REGION, and the usual AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY."""
    return S3Options(
        endpoint_url=os.environ.get("TORPOR_S3_ENDPOINT") or None,
        region=os.environ.get("TORPOR_S3_REGION") or os.environ.get("AWS_REGION") or None,
        access_key_id=os.environ.get("AWS_ACCESS_KEY_ID") or None,
        secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY") or None,
    )

"""S3 settings from the environment (only cli/ reads environment variables)."""

from __future__ import annotations

import os

from torpor.store import S3Options


def s3_options_from_env() -> S3Options:
    """TORPOR_S3_ENDPOINT and TORPOR_S3_REGION; credentials come from boto3's own chain
    (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN, profiles, instance roles)."""
    return S3Options(
        endpoint_url=os.environ.get("TORPOR_S3_ENDPOINT") or None,
        region=os.environ.get("TORPOR_S3_REGION") or os.environ.get("AWS_REGION") or None,
    )

"""Snapshot and bundle storage: a local directory (file://) or S3 (s3://)."""

from torpor.store._base import Progress, Reader, Store, Writer
from torpor.store._open import S3Options, open_store

__all__ = ["Progress", "Reader", "S3Options", "Store", "Writer", "open_store"]

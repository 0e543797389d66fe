"""Opening a store from its URL, the S3 settings, and the key rules both backends share."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote, urlsplit

from torpor._errors import ConfigError

if TYPE_CHECKING:
    from torpor.store._base import Store

MIN_PART_SIZE = 5 * 1024 * 1024
"""S3 refuses multipart parts smaller than this (except the last one)."""
MAX_PART_SIZE = 5 * 1024 * 1024 * 1024

# A suffix no key may end with: the file store names its in-progress writes so.
TEMP_SUFFIX = ".torpor-tmp"

_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]")


@dataclass(frozen=True, kw_only=True)
class S3Options:
    """How to reach an S3-compatible server (AWS S3, MinIO, Ceph RGW, R2, ...).

    Credentials left as None come from boto3's usual chain (environment,
    shared config files, instance or container role).
    """

    endpoint_url: str | None = None
    """Base URL of the server, e.g. ``http://127.0.0.1:9000``; None means AWS S3."""
    region: str | None = None
    """Signing region; None lets boto3 decide (``us-east-1`` for most non-AWS servers)."""
    access_key_id: str | None = None
    """Access key id; None uses boto3's credential chain."""
    secret_access_key: str | None = field(default=None, repr=False)
    """Secret key; never printed, logged or put in an error message."""
    session_token: str | None = field(default=None, repr=False)
    """Temporary session token (AWS STS), if the credentials are temporary."""
    part_size: int = 16 * 1024 * 1024
    """Multipart part size in bytes, also the size of each ranged GET when reading (5 MiB to 5 GiB)."""
    max_concurrency: int = 4
    """Parts uploaded or ranges downloaded at once, per transfer; memory is about (this + 1) x part_size."""
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    """``path`` (``endpoint/bucket/key``) or ``virtual`` (``bucket.endpoint/key``).
    ``auto`` means path style when ``endpoint_url`` is set (MinIO, Ceph) and virtual style on AWS."""
    max_attempts: int = 8
    """Attempts per request (botocore standard retry mode) before a transient error is given up on."""
    request_checksums: Literal["when_supported", "when_required"] = "when_supported"
    """botocore's ``request_checksum_calculation``: set ``when_required`` for older
    S3-compatible servers that reject the CRC32 checksum headers of recent botocore."""

    def __post_init__(self) -> None:
        if not MIN_PART_SIZE <= self.part_size <= MAX_PART_SIZE:
            raise ConfigError(
                f"S3Options.part_size={self.part_size} is out of range: S3 needs parts of 5 MiB "
                f"({MIN_PART_SIZE}) to 5 GiB ({MAX_PART_SIZE})"
            )
        if self.max_concurrency < 1:
            raise ConfigError(f"S3Options.max_concurrency={self.max_concurrency} must be at least 1")
        if self.max_attempts < 1:
            raise ConfigError(f"S3Options.max_attempts={self.max_attempts} must be at least 1")
        if self.addressing_style not in ("auto", "path", "virtual"):
            raise ConfigError(f"S3Options.addressing_style={self.addressing_style!r}: use 'auto', 'path' or 'virtual'")
        if self.request_checksums not in ("when_supported", "when_required"):
            raise ConfigError(
                f"S3Options.request_checksums={self.request_checksums!r}: use 'when_supported' or 'when_required'"
            )
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ConfigError("S3Options: give both access_key_id and secret_access_key, or neither")
        if self.endpoint_url is not None and urlsplit(self.endpoint_url).scheme not in ("http", "https"):
            raise ConfigError(
                f"S3Options.endpoint_url={self.endpoint_url!r} must be an http:// or https:// URL"
            )


def open_store(url: str, *, s3: S3Options | None = None) -> Store:
    """Open the store at ``url``: ``file:///absolute/dir`` or ``s3://bucket[/prefix]``.

    Opening does no I/O; call ``check()`` to learn whether the store is usable.
    ``s3`` is used by ``s3://`` URLs only.
    """
    parts = urlsplit(url)
    if parts.scheme == "file":
        from torpor.store._file import FileStore

        return FileStore(_file_root(url, parts.netloc, parts.path, parts.query, parts.fragment))
    if parts.scheme == "s3":
        from torpor.store._s3 import S3Store

        bucket, prefix = _s3_location(url, parts.netloc, parts.path, parts.query, parts.fragment)
        return S3Store(bucket=bucket, prefix=prefix, options=s3 or S3Options())
    raise ConfigError(
        f"unsupported store URL {_redact(url)!r}: use file:///absolute/dir for a local directory "
        "or s3://bucket/optional/prefix for S3-compatible storage"
    )


def _file_root(url: str, host: str, path: str, query: str, fragment: str) -> str:
    if query or fragment:
        raise ConfigError(f"store URL {url!r}: a file:// URL takes no query or fragment")
    if host not in ("", "localhost"):
        raise ConfigError(
            f"store URL {url!r}: the path must be absolute, as in file:///var/lib/torpor "
            f"(three slashes; {host!r} was read as a host name)"
        )
    path = unquote(path)
    if not path.startswith("/") or path == "/":
        raise ConfigError(f"store URL {url!r}: give an absolute directory other than /, as in file:///var/lib/torpor")
    if ".." in PurePosixPath(path).parts:
        raise ConfigError(f"store URL {url!r}: the path may not contain '..'")
    return path


def _s3_location(url: str, netloc: str, path: str, query: str, fragment: str) -> tuple[str, str]:
    shown = _redact(url)
    if "@" in netloc:
        raise ConfigError(
            f"store URL {shown!r}: do not put credentials in the URL; pass them in S3Options "
            "(or let boto3 find them in its usual places)"
        )
    if query or fragment:
        raise ConfigError(f"store URL {shown!r}: an s3:// URL takes no query or fragment; settings go in S3Options")
    if not netloc:
        raise ConfigError(f"store URL {shown!r} names no bucket: use s3://bucket or s3://bucket/prefix")
    if not _BUCKET.fullmatch(netloc) or ".." in netloc:
        raise ConfigError(
            f"store URL {shown!r}: {netloc!r} is not a valid bucket name (3 to 63 letters, digits, '.', '-', '_')"
        )
    prefix = unquote(path).strip("/")
    if prefix:
        try:
            check_key(prefix)
        except ConfigError as exc:
            raise ConfigError(f"store URL {shown!r}: bad prefix: {exc}") from None
        prefix += "/"
    return netloc, prefix


def _redact(url: str) -> str:
    """The URL without anything that looks like credentials."""
    return re.sub(r"//[^/@]*@", "//***@", url)


def check_key(key: str, *, prefix: bool = False) -> str:
    """Return ``key`` if it is a valid relative key (or, with ``prefix``, a listing prefix).

    Both backends apply the same rules so that a key valid on one is valid on
    the other: relative, '/'-separated, no empty, '.' or '..' segment, no NUL.
    A prefix may be empty and may end with '/'.
    """
    if not isinstance(key, str):
        raise ConfigError(f"store key must be a string, not {type(key).__name__}")
    if prefix and key == "":
        return key
    body = key[:-1] if prefix and key.endswith("/") else key
    what = "prefix" if prefix else "key"
    if not body:
        raise ConfigError(f"store {what} {key!r} is empty")
    if body.startswith("/") or key.startswith("/"):
        raise ConfigError(f"store {what} {key!r} is absolute: keys are relative to the store's root")
    if "\x00" in body or "\\" in body:
        raise ConfigError(f"store {what} {key!r} contains a NUL or a backslash")
    for segment in body.split("/"):
        if segment in ("", ".", ".."):
            raise ConfigError(f"store {what} {key!r} has an empty, '.' or '..' segment: keys may not escape the root")
    if not prefix and key.endswith(TEMP_SUFFIX):
        raise ConfigError(f"store key {key!r} ends with {TEMP_SUFFIX!r}, which is reserved for partial writes")
    return key

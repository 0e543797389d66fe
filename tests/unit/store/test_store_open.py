"""Store URLs, S3Options and the key rules: no server needed."""

from __future__ import annotations

import pytest

import torpor.store
from torpor._errors import ConfigError
from torpor.store import S3Options, open_store
from torpor.store._file import FileStore
from torpor.store._open import check_key
from torpor.store._s3 import S3Store


def test_public_names() -> None:
    assert sorted(torpor.store.__all__) == ["Progress", "Reader", "S3Options", "Store", "Writer", "open_store"]


def test_file_url_opens_a_directory_store(tmp_path) -> None:
    store = open_store(tmp_path.as_uri())
    assert isinstance(store, FileStore)
    assert store.root == tmp_path
    assert store.url == tmp_path.as_uri()
    assert not (tmp_path / "sub").exists()  # opening does no I/O
    assert open_store("file://localhost/var/lib/torpor").root.as_posix() == "/var/lib/torpor"
    assert open_store("file:///var/lib/tor%20por").root.as_posix() == "/var/lib/tor por"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("file://relative/dir", "absolute"),
        ("file:relative/dir", "absolute"),
        ("file:///", "absolute"),
        ("file:///var/../etc", ".."),
        ("file:///var/lib?x=1", "query"),
        ("/var/lib/torpor", "unsupported store URL"),
        ("var/lib/torpor", "unsupported store URL"),
        ("https://example.test/bucket", "unsupported store URL"),
        ("s3://", "no bucket"),
        ("s3:///prefix", "no bucket"),
        ("s3://b/prefix", "not a valid bucket"),
        ("s3://bad_bucket!/p", "not a valid bucket"),
        ("s3://bucket/a/../b", "'..'"),
        ("s3://bucket/a//b", "empty"),
        ("s3://bucket/p?region=x", "query"),
    ],
)
def test_bad_urls_are_config_errors(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        open_store(url)
    assert says in str(info.value)


def test_credentials_in_the_url_are_refused_and_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        open_store("s3://AKIDEXAMPLE:sup3rs3cret@bucket/prefix")
    assert "S3Options" in str(info.value)
    assert "sup3rs3cret" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "prefix", "shown"),
    [
        ("s3://bucket", "", "s3://bucket/"),
        ("s3://bucket/", "", "s3://bucket/"),
        ("s3://my.bucket-1/runs", "runs/", "s3://my.bucket-1/runs/"),
        ("s3://bucket/a/b/", "a/b/", "s3://bucket/a/b/"),
    ],
)
def test_s3_url_bucket_and_prefix(url: str, prefix: str, shown: str) -> None:
    store = open_store(url, s3=S3Options(endpoint_url="http://127.0.0.1:1", region="us-east-1"))
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.url) == (url.split("/")[2], prefix, shown)
    store.close()


def test_s3_options_defaults_and_validation() -> None:
    o = S3Options()
    assert o.part_size == 16 * 1024 * 1024 and o.max_concurrency == 4
    with pytest.raises(ConfigError, match="5 MiB"):
        S3Options(part_size=1024)
    with pytest.raises(ConfigError, match="max_concurrency"):
        S3Options(max_concurrency=0)
    with pytest.raises(ConfigError, match="both"):
        S3Options(access_key_id="AKID")
    with pytest.raises(ConfigError, match="http"):
        S3Options(endpoint_url="127.0.0.1:9000")
    with pytest.raises(ConfigError, match="addressing_style"):
        S3Options(addressing_style="sideways")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        S3Options("http://127.0.0.1:9000")  # type: ignore[misc]  # keyword-only


def test_s3_options_never_show_the_secret() -> None:
    o = S3Options(access_key_id="AKIDEXAMPLE", secret_access_key="sup3rs3cret", session_token="t0ken")
    assert "sup3rs3cret" not in repr(o) and "t0ken" not in repr(o)
    store = open_store("s3://bucket/p", s3=o)
    assert "sup3rs3cret" not in repr(store) and "sup3rs3cret" not in store.url
    store.close()


@pytest.mark.parametrize("key", ["a", "runs/r1/checkpoints/c1/manifest.json", ".hidden", "a..b", "x/.y"])
def test_valid_keys(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(
    "key", ["", "/abs", "..", "../x", "a/../../x", "a/./b", "a//b", "a/", "nul\x00", "back\\slash", "x.torpor-tmp"]
)
def test_invalid_keys(key: str) -> None:
    with pytest.raises(ConfigError):
        check_key(key)


@pytest.mark.parametrize("prefix", ["", "runs/", "runs/r1", "runs/r1/"])
def test_valid_prefixes(prefix: str) -> None:
    assert check_key(prefix, prefix=True) == prefix


@pytest.mark.parametrize("prefix", ["/", "/runs", "../", "runs/../../", "a//"])
def test_invalid_prefixes(prefix: str) -> None:
    with pytest.raises(ConfigError):
        check_key(prefix, prefix=True)

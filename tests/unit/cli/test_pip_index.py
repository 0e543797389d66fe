"""uv uses the package index pip is configured with, unless uv is configured itself."""

from __future__ import annotations

from torpor.cli._pip_index import parse_pip_config, uv_env_from_pip

MIRROR = "https://mirror.example.invalid/simple"
OTHER = "https://other.example.invalid/simple"


def test_pip_settings_merge_by_precedence_env_over_install_over_global():
    lines = [
        f"global.index-url='{OTHER}'",
        f"install.index-url='{MIRROR}'",
        "global.timeout='30'",
        ":env:.timeout='180'",
        "download.find-links='/nowhere'",  # another command's section: not install's
        "not a setting",
    ]
    assert parse_pip_config(lines) == {"index-url": MIRROR, "timeout": "180"}


def test_pip_index_settings_become_uvs(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    pip = {"index-url": MIRROR, "extra-index-url": f"{OTHER}\n{OTHER}2", "trusted-host": "a b",
           "find-links": f"{wheels} /not/there", "cert": "/etc/ca.pem", "default-timeout": "180"}
    assert uv_env_from_pip(pip, {}) == {
        "UV_DEFAULT_INDEX": MIRROR, "UV_INDEX": f"{OTHER} {OTHER}2", "UV_INSECURE_HOST": "a b",
        "UV_FIND_LINKS": str(wheels), "SSL_CERT_FILE": "/etc/ca.pem", "UV_HTTP_TIMEOUT": "180"}


def test_uvs_own_configuration_wins_over_pips():
    pip = {"index-url": MIRROR, "extra-index-url": OTHER, "cert": "/etc/ca.pem"}
    # An index named for uv: none of pip's index settings are added; the certificate still is.
    assert uv_env_from_pip(pip, {"UV_INDEX_URL": OTHER}) == {"SSL_CERT_FILE": "/etc/ca.pem"}
    assert uv_env_from_pip(pip, {"SSL_CERT_FILE": "/mine.pem"}) == {"UV_DEFAULT_INDEX": MIRROR, "UV_INDEX": OTHER}
    assert uv_env_from_pip({"find-links": "/not/there"}, {}) == {}

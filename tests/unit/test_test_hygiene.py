"""Guards on the test suite itself."""

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_test_imports_from_conftest() -> None:
    """Several conftest.py files exist; `from conftest import` picks whichever was imported first."""
    offenders = [str(p.relative_to(TESTS)) for p in TESTS.rglob("*.py")
                 if "from conftest import" in p.read_text() and p.name != Path(__file__).name]
    assert not offenders, f"import from helpers.py (or a *_support.py module) instead: {offenders}"

"""Guards on the test suite itself."""

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_test_imports_from_conftest() -> None:
    """Several conftest.py files exist; `from conftest import` picks whichever was imported first."""
    offenders = [str(p.relative_to(TESTS)) for p in TESTS.rglob("*.py")
                 if "from conftest import" in p.read_text() and p.name != Path(__file__).name]
    assert not offenders, f"import from helpers.py (or a *_support.py module) instead: {offenders}"


def test_test_module_names_are_unique() -> None:
    """Test directories are not packages: two test files of one name make pytest refuse to collect the second."""
    seen: dict[str, str] = {}
    twins = []
    for p in sorted(TESTS.rglob("test_*.py")):
        rel = str(p.relative_to(TESTS))
        if p.name in seen:
            twins.append((seen[p.name], rel))
        seen.setdefault(p.name, rel)
    assert not twins, f"rename one of each pair: {twins}"

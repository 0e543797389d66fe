"""The checker itself, on made-up ledgers: a checker that cannot fail proves nothing."""

from __future__ import annotations

from harness_checker import Expect, check_ledger
from harness_ledger import Step


def _steps(*rows: tuple[float, str, int, str, int]) -> list[Step]:
    return [Step(t=t, host=host, run="r", step=n, copy=copy, pid=1, task_time=t, ckpt=ckpt)
            for t, host, n, copy, ckpt in rows]


def _problems(expect: Expect, *rows: tuple[float, str, int, str, int]) -> list[str]:
    return check_ledger(expect, _steps(*rows), None, lease=3.0)[0]


COUNTER = Expect("r", "counter", 4, host_lost=True, periodic=1.0)
LOOP = Expect("r", "ckpt-loop", 4, host_lost=True)


def test_a_clean_handover_passes() -> None:
    assert _problems(COUNTER, (1, "a1", 1, "A", 0), (2, "a1", 2, "A", 0), (5, "a2", 2, "B", 0),
                     (6, "a2", 3, "B", 0), (7, "a2", 4, "B", 0)) == []


def test_two_live_copies_are_caught() -> None:
    found = _problems(COUNTER, (1, "a1", 1, "A", 0), (2, "a1", 2, "A", 0), (3, "a2", 2, "B", 0),
                      (4, "a1", 3, "A", 0), (5, "a2", 3, "B", 0), (6, "a2", 4, "B", 0))
    assert any("two copies ran at once" in p for p in found), found


def test_a_lost_step_is_caught() -> None:
    found = _problems(COUNTER, (1, "a1", 1, "A", 0), (2, "a1", 2, "A", 0), (3, "a2", 4, "B", 0))
    assert any("steps 3..3 lost" in p for p in found), found


def test_a_restart_needs_a_lost_host() -> None:
    rows = ((1, "a1", 1, "A", 0), (2, "a1", 2, "A", 0), (3, "a1", 1, "B", 0), (4, "a1", 2, "B", 0))
    assert _problems(Expect("r", "counter", 2, host_lost=True), *rows) == []
    found = _problems(Expect("r", "counter", 2), *rows)
    assert any("started the run over" in p for p in found), found


def test_redoing_more_than_the_last_checkpoint_explains_is_caught() -> None:
    # checkpoint() after step 3 returned (step 4 says so), yet the new copy came from the one after step 2.
    found = _problems(LOOP, (1, "a1", 1, "A", 0), (2, "a1", 2, "A", 1), (3, "a1", 3, "A", 2), (4, "a1", 4, "A", 3),
                      (9, "a2", 3, "B", 2), (10, "a2", 4, "B", 2))
    assert any("older than the one after step 3" in p for p in found), found
    # A periodic image cannot explain redoing steps made long before the copy stopped.
    found = _problems(Expect("r", "counter", 3, periodic=1.0), (1, "a1", 1, "A", 0), (2, "a1", 2, "A", 0),
                      (20, "a1", 3, "A", 0), (21, "a2", 2, "B", 0), (22, "a2", 3, "B", 0))
    assert any("redid steps 2..3" in p for p in found), found


def test_a_host_lost_after_a_restore_redoes_the_steps_since_that_image_and_no_more() -> None:
    """Found by bench/chaos.py (seed 1): a run restored from its suspend image on a3, which died 0.1 s later;
    restored again from the same image on a1, it redid the two steps a3 had made. That is the design (work since
    the last image is lost with its host); coming back from an image older than a3 began with is not."""
    wait = Expect("r", "long-wait", 5, host_lost=True)
    rows = ((1, "a1", 1, "A", 0), (2, "a1", 2, "A", 0), (10, "a3", 3, "B", 0), (10.1, "a3", 4, "B", 0),
            (14, "a1", 3, "C", 0), (14.1, "a1", 4, "C", 0), (14.2, "a1", 5, "C", 0))
    assert _problems(wait, *rows) == []
    # Without a host lost, no step may be made twice.
    found = _problems(Expect("r", "long-wait", 5), *rows)
    assert any("redid steps 3..4" in p for p in found), found
    # Back to before the image B began with (its step 3): from an older image.
    older = ((1, "a1", 1, "A", 0), (2, "a1", 2, "A", 0), (10, "a3", 3, "B", 0), (10.1, "a3", 4, "B", 0),
             (14, "a1", 2, "C", 0), (14.1, "a1", 3, "C", 0), (14.2, "a1", 4, "C", 0), (14.3, "a1", 5, "C", 0))
    found = _problems(wait, *older)
    assert any("came from an older image" in p for p in found), found

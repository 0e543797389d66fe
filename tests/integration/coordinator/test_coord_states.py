"""Each transition is one checked UPDATE: a move from the wrong state changes nothing."""

from __future__ import annotations

import pytest

from torpor.coordinator import ALLOWED, Database, TransitionError
from torpor.coordinator._states import transition
from torpor.coordinator._triggers import NewRun, create_runs
from torpor.coordinator import Limits


@pytest.fixture
def db(postgres_url):
    d = Database(postgres_url, pool_size=2)
    d.open()
    d.run(lambda cur: cur.execute(
        "INSERT INTO deployments (version, project, bundle_location) VALUES ('v1', 'p', 'b');"
        "INSERT INTO tasks (task_id, version, settings) VALUES ('t', 'v1', '')"))
    yield d
    d.close()


def _new_run(db) -> str:
    return db.run(create_runs, [NewRun(task="t")], Limits())[0][0]["id"]


def _force(db, run_id, status):
    db.run(lambda cur: cur.execute("UPDATE runs SET status = %s WHERE id = %s", (status, run_id)))


def _status(db, run_id):
    return db.run(lambda cur: cur.execute("SELECT status FROM runs WHERE id = %s", (run_id,)).fetchone()["status"])


@pytest.mark.parametrize("target", sorted(ALLOWED))
def test_every_legal_and_illegal_move(db, target):
    run_id = _new_run(db)
    all_states = set(ALLOWED) | {"QUEUED"}
    for source in sorted(all_states):
        _force(db, run_id, source)
        if source in ALLOWED[target]:
            row = db.run(transition, run_id, target, event="test")
            assert row["status"] == target
        else:
            with pytest.raises(TransitionError) as err:
                db.run(transition, run_id, target, event="test")
            assert f"is {source}; it cannot become {target}" in err.value.message
            assert _status(db, run_id) == source


def test_generation_fences_a_transition(db):
    run_id = _new_run(db)
    _force(db, run_id, "STARTING")
    db.run(lambda cur: cur.execute("UPDATE runs SET generation = 2 WHERE id = %s", (run_id,)))
    with pytest.raises(TransitionError):
        db.run(transition, run_id, "RUNNING", event="test", generation=1)
    assert db.run(transition, run_id, "RUNNING", event="test", generation=2)["status"] == "RUNNING"


def test_unknown_run_is_not_found(db):
    with pytest.raises(TransitionError) as err:
        db.run(transition, "run_nope", "CANCELED", event="test")
    assert err.value.code.name == "NOT_FOUND"

"""Sealed small secrets: they open only with their key, purpose and context, and say so otherwise."""

from __future__ import annotations

import pytest

from torpor._errors import ConfigError, IntegrityError
from torpor._proto.v1 import agent_pb2
from torpor._seal import Kek, Keyring
from torpor._secretbox import IN_TRANSIT, open_run_env, open_sealed, seal, transit_context
from torpor.coordinator._env import check_name


def test_a_sealed_value_opens_only_as_it_was_sealed():
    kek, other = Kek.generate(), Kek.generate()
    blob = seal(kek, "env-at-rest", b"hunter2", "proj/API_KEY")
    assert b"hunter2" not in blob
    assert open_sealed(kek, "env-at-rest", blob, "proj/API_KEY") == b"hunter2"
    for key, purpose, context in ((other, "env-at-rest", "proj/API_KEY"), (kek, "env-in-transit", "proj/API_KEY"),
                                  (kek, "env-at-rest", "proj/OTHER"), (kek, "env-at-rest", "other/API_KEY")):
        with pytest.raises(IntegrityError, match="does not open"):
            open_sealed(key, purpose, blob, context)
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(IntegrityError):
        open_sealed(kek, "env-at-rest", bytes(tampered), "proj/API_KEY")


def test_a_run_spec_carries_its_secrets_sealed_to_its_run_and_generation():
    old, new = Kek.generate(), Kek.generate()
    spec = agent_pb2.RunSpec(run=agent_pb2.RunRef(run_id="run-1", generation=2), env={"PLAIN": "x"})
    spec.sealed_env = seal(old, IN_TRANSIT, b'{"TOKEN": "t0k"}', transit_context("run-1", 2))
    spec.env_key_id = old.id
    assert open_run_env(Keyring(new, (old,)), spec) == {"PLAIN": "x", "TOKEN": "t0k"}
    with pytest.raises(ConfigError, match="not handed"):
        open_run_env(Keyring(new), spec)
    spec.run.generation = 3  # a copy of another generation's spec
    with pytest.raises(IntegrityError):
        open_run_env(Keyring(new, (old,)), spec)


@pytest.mark.parametrize("name,fragment", [("2FA", "not a variable name"), ("A-B", "not a variable name"),
                                           ("", "not a variable name"), ("TORPOR_X", "torpor's own"),
                                           ("torpor_x", "torpor's own"), ("PYTHONPATH", "torpor sets it"),
                                           ("PYTHONHOME", "torpor sets it"), ("A" * 129, "not a variable name")])
def test_bad_names_say_what_to_use(name, fragment):
    with pytest.raises(ConfigError, match=fragment):
        check_name(name)


def test_good_names_pass():
    for name in ("API_KEY", "_private", "a1", "PYTHONPATHS", "MY_TORPOR_X", "A" * 128):
        assert check_name(name) == name

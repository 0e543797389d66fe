"""The task seccomp profile: Docker's default resolved for no capabilities on x86_64, then narrowed.

Pure logic on the shipped JSON; tests/integration/agent/test_hostile_syscalls.py
runs it in real containers.
"""

from __future__ import annotations

import copy
import errno
import fnmatch
import hashlib
import re
import tomllib
from pathlib import Path

import pytest

from torpor import ConfigError
from torpor.agent import _seccomp
from torpor.agent._oci import ContainerSpec, make_config
from torpor.agent._seccomp import (
    CLONE_NAMESPACE_FLAGS,
    CRIU_AFTER_FILTER,
    MUST_REFUSE,
    REMOVED,
    check,
    load_engine_profile,
    narrow,
    resolve,
    verdict,
)

ROOT = Path(__file__).resolve().parents[3]
AGENT = ROOT / "src" / "torpor" / "agent"
ALLOW, EPERM, ENOSYS = ("SCMP_ACT_ALLOW", None), ("SCMP_ACT_ERRNO", errno.EPERM), ("SCMP_ACT_ERRNO", errno.ENOSYS)
CLONE_NS = {"NEWNS": 0x20000, "NEWCGROUP": 0x2000000, "NEWUTS": 0x4000000, "NEWIPC": 0x8000000,
            "NEWUSER": 0x10000000, "NEWPID": 0x20000000, "NEWNET": 0x40000000}


@pytest.fixture(scope="module")
def profile() -> dict:
    return _seccomp._task_seccomp("x86_64", (6, 1))


# -- resolving an engine profile -------------------------------------------------

SYNTHETIC = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 1,
    "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
                {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
    "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ALLOW", "comment": "always"},
        {"name": "write", "action": "SCMP_ACT_ALLOW"},
        {"names": ["admin"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["two_caps"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN", "CAP_BPF"]}},
        {"names": ["not_admin"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN", "CAP_BPF"]}},
        {"names": ["amd64_only"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "x32"]}},
        {"names": ["not_arm64"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["arm64"]}},
        {"names": ["new_kernel"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "5.10"}},
        {"names": ["old_kernel"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "5.10"}},
    ],
}


def names(seccomp: dict) -> set[str]:
    return {n for rule in seccomp["syscalls"] for n in rule["names"]}


def test_resolve_by_caps_arch_and_kernel():
    none = resolve(SYNTHETIC, arch="amd64", caps=(), kernel=(5, 4))
    assert names(none) == {"read", "write", "not_admin", "amd64_only", "not_arm64", "old_kernel"}
    assert none["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert none["defaultAction"] == "SCMP_ACT_ERRNO" and none["defaultErrnoRet"] == 1
    # Only OCI fields come out: no includes, excludes or comments for runc to trip on.
    assert all(set(rule) <= {"names", "action", "errnoRet", "args"} for rule in none["syscalls"])

    # includes.caps needs every cap named; excludes.caps drops the rule on any of them.
    one = resolve(SYNTHETIC, arch="amd64", caps=("CAP_SYS_ADMIN",), kernel=(5, 4))
    assert {"admin", "not_admin", "two_caps"} & names(one) == {"admin"}
    both = resolve(SYNTHETIC, arch="amd64", caps=("CAP_SYS_ADMIN", "CAP_BPF"), kernel=(5, 4))
    assert {"admin", "two_caps"} <= names(both)

    arm = resolve(SYNTHETIC, arch="arm64", caps=(), kernel=(6, 1))
    assert names(arm) == {"read", "write", "not_admin", "new_kernel"}
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]


def test_resolve_refuses_what_it_cannot_read():
    with pytest.raises(ConfigError, match="both 'name' and 'names'"):
        resolve({**SYNTHETIC, "syscalls": [{"name": "a", "names": ["b"], "action": "SCMP_ACT_ALLOW"}]},
                arch="amd64", caps=(), kernel=(6, 1))
    with pytest.raises(ConfigError, match="both 'architectures' and 'archMap'"):
        resolve({**SYNTHETIC, "architectures": ["SCMP_ARCH_X86_64"]}, arch="amd64", caps=(), kernel=(6, 1))
    with pytest.raises(ConfigError, match="unknown architecture 'sparc'"):
        resolve(SYNTHETIC, arch="sparc", caps=(), kernel=(6, 1))
    with pytest.raises(ConfigError, match="made for x86_64 hosts; this one is aarch64"):
        _seccomp._task_seccomp("aarch64", (6, 1))


def test_verdict_follows_argument_rules_and_precedence():
    seccomp = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "syscalls": [
        {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 0xF0, "op": "SCMP_CMP_MASKED_EQ"}]},
        {"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 38, "op": "SCMP_CMP_LT"}]},
        {"names": ["both"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["both"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
    ]}
    assert verdict(seccomp, "clone", [0x0F]) == ALLOW
    assert verdict(seccomp, "clone", [0x10]) == EPERM
    assert verdict(seccomp, "socket", [37]) == ALLOW and verdict(seccomp, "socket", [38]) == EPERM
    assert verdict(seccomp, "both") == ENOSYS  # the stricter action wins
    assert verdict(seccomp, "anything") == EPERM


# -- the profile a task gets -------------------------------------------------------

def test_task_profile_shape(profile):
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO" and profile["defaultErrnoRet"] == errno.EPERM
    assert profile["architectures"] == ["SCMP_ARCH_X86_64"]  # no x86 or x32 entry points
    clone_rules = [r for r in profile["syscalls"] if "clone" in r["names"]]
    assert clone_rules == [{"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                            "args": [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "op": "SCMP_CMP_MASKED_EQ"}]}]
    assert CLONE_NAMESPACE_FLAGS == sum(CLONE_NS.values())
    assert [r for r in profile["syscalls"] if "clone3" in r["names"]] == [
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS}]


def test_task_profile_answers(profile):
    assert verdict(profile, "clone", [17]) == ALLOW  # fork (SIGCHLD)
    assert verdict(profile, "clone", [0x3D0F00]) == ALLOW  # glibc's thread flags
    for flag, bit in CLONE_NS.items():
        assert verdict(profile, "clone", [bit | 17]) == EPERM, flag
    assert verdict(profile, "clone3") == ENOSYS
    for name in MUST_REFUSE:
        assert verdict(profile, name) == EPERM, name
    for name in CRIU_AFTER_FILTER:
        assert verdict(profile, name) == ALLOW, name
    for name in ("read", "write", "mmap", "futex", "rseq", "epoll_wait", "connect", "execve", "vfork", "wait4"):
        assert verdict(profile, name) == ALLOW, name


def test_removed_are_what_docker_allows(profile):
    docker = resolve(load_engine_profile(), arch="amd64", caps=(), kernel=(6, 1))
    for name, why in REMOVED.items():
        assert verdict(docker, name) == ALLOW, f"{name} is not allowed by Docker's profile: drop it from REMOVED"
        assert verdict(profile, name) == EPERM, name
        assert len(why) > 40
    assert names(docker) - names(profile) == set(REMOVED)
    assert narrow(docker) == profile


def test_check_refuses_a_weaker_profile(profile):
    check(profile)
    loose = copy.deepcopy(profile)
    loose["syscalls"].append({"names": ["unshare"], "action": "SCMP_ACT_ALLOW"})
    with pytest.raises(ConfigError, match=r"unshare \(must be refused\)"):
        check(loose)
    no_clone3 = copy.deepcopy(profile)
    no_clone3["syscalls"] = [r for r in no_clone3["syscalls"] if r["names"] != ["clone3"]]
    with pytest.raises(ConfigError, match="clone3"):
        check(no_clone3)
    breaks_criu = copy.deepcopy(profile)
    for rule in breaks_criu["syscalls"]:
        rule["names"] = [n for n in rule["names"] if n != "capset"]
    with pytest.raises(ConfigError, match=r"capset \(CRIU's restorer calls it\)"):
        check(breaks_criu)


def test_containers_get_it():
    config = make_config(ContainerSpec(args=["/bin/true"], socket_dir=Path("/nonexistent")))
    assert config["linux"]["seccomp"] == _seccomp.task_seccomp()  # type: ignore[index]


# -- the data file, its provenance, packaging and docs --------------------------------

def test_shipped_profile_is_the_one_named_in_its_notice():
    notice = (AGENT / "moby_seccomp_default.NOTICE").read_text()
    digest = re.search(r"sha256\s+([0-9a-f]{64})", notice).group(1)  # type: ignore[union-attr]
    assert hashlib.sha256((AGENT / _seccomp.ENGINE_PROFILE).read_bytes()).hexdigest() == digest
    assert "moby/profiles" in notice and "Apache" in notice
    assert "Apache License" in (AGENT / "moby_seccomp_default.LICENSE").read_text()


def test_package_data_ships_the_profile():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["torpor"]
    for name in (_seccomp.ENGINE_PROFILE, "moby_seccomp_default.NOTICE", "moby_seccomp_default.LICENSE"):
        assert any(fnmatch.fnmatch(f"agent/{name}", p) for p in patterns), name


def test_security_doc_names_every_removal():
    doc = (ROOT / "docs" / "security.md").read_text()
    assert "seccomp/v0.2.3" in doc
    for name in REMOVED:
        assert f"`{name}`" in doc, name
    assert "deny list" not in doc and "deny-list" not in doc

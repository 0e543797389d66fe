"""The seccomp filter of every task container.

It starts from Docker's default profile, shipped as data beside this module
(moby_seccomp_default.json; its source, version and licence are in
moby_seccomp_default.NOTICE). The profile is resolved the way Docker does it
for a container with no capabilities on x86_64: rules whose ``includes`` ask
for a capability or another architecture are left out, rules whose
``excludes`` name what the container lacks are kept. Whatever is not allowed
fails with EPERM; ``clone`` is allowed only without namespace flags and
``clone3`` answers ENOSYS, so libc falls back to ``clone``, whose flags the
filter can see.

torpor then removes what a task must never do here even though Docker
allows it (REMOVED, with the reasons), keeps only the native architecture,
and checks the result: what must be refused is refused (MUST_REFUSE), and
what CRIU's restorer calls inside the task after putting the task's filter
back is allowed (CRIU_AFTER_FILTER). A profile that fails the check is a
ConfigError, never a weaker container.
"""

from __future__ import annotations

import copy
import errno
import functools
import json
import os
import platform
import re
from importlib import resources
from typing import Any, Collection, Iterable

from torpor._errors import ConfigError

ENGINE_PROFILE = "moby_seccomp_default.json"
"""Docker's default profile, verbatim, in this package."""

CLONE_NAMESPACE_FLAGS = 0x7E020000
"""CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET: ``clone`` is allowed only with none of them set."""

NATIVE_ARCH = "SCMP_ARCH_X86_64"

REMOVED: dict[str, str] = {
    "ptrace": "Docker allows it on kernels from 4.8; CRIU dumps a run by attaching to each of its processes with "
              "ptrace, and a process already traced by another cannot be attached, so a task tracing its own "
              "children could make itself impossible to suspend or checkpoint; ptrace is also a long line of "
              "kernel bugs and no task needs a debugger",
    "process_vm_readv": "reads another process's memory under the same access check as ptrace; goes with it",
    "process_vm_writev": "writes another process's memory under the same access check as ptrace; goes with it",
    "modify_ldt": "only 16- and 32-bit code uses a local descriptor table, and CRIU refuses to dump a process "
                  "that has one (\"Can't dump task with LDT descriptors\"): a task could make itself undumpable",
    "memfd_secret": "secret memory is taken out of the kernel's direct map; CRIU 4.2 cannot read it back, so a "
                    "task holding some could not be dumped",
}
"""Syscalls Docker's profile allows that a task does not get here, and why."""

NARROWED_ARCHITECTURES = (
    "Docker also lists the x86 (32-bit) and x32 sub-architectures. Tasks run the host's 64-bit Python, so "
    "torpor lists x86_64 alone: a 32-bit or x32 system call kills the calling thread (the filter's bad-"
    "architecture action). That removes the compat syscall entry points, and with them the i386 socketcall() "
    "multiplexer, whose arguments the filter cannot see (it would let a 32-bit program open AF_ALG sockets "
    "the socket() rules refuse)."
)

MUST_REFUSE = (
    # namespaces and mounts: the route to a user namespace with capabilities of its own
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "fsopen", "fsmount", "fspick",
    "open_tree", "move_mount", "mount_setattr",
    # other processes and the kernel's privileged interfaces
    *REMOVED, "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "kexec_load", "kexec_file_load", "init_module", "finit_module",
    "delete_module", "open_by_handle_at", "pidfd_getfd", "kcmp", "reboot", "swapon", "swapoff", "syslog",
    "acct", "settimeofday", "clock_settime", "iopl", "ioperm", "quotactl", "sethostname", "lookup_dcookie",
)
"""Refused with EPERM whatever their arguments; checked on every load of the profile."""

CRIU_AFTER_FILTER = (
    "seccomp",  # a task's own extra filters are put back through the first one
    "getgroups", "setgroups", "getresuid", "getresgid", "setresuid", "setresgid", "setfsuid", "setfsgid",
    "capget", "capset", "prctl", "arch_prctl", "futex", "close", "setitimer", "timer_settime", "munmap",
    "rt_sigreturn", "exit_group",
)
"""What CRIU's restorer calls in the restored task after restoring its filter (criu/pie/restorer.c:
restore_seccomp comes before restore_creds, the timers and the final sigreturn). Refusing one makes every
restore of a run fail."""

_SOCKET_FAMILIES = {"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10, "AF_NETLINK": 16}
"""Families the in-container runtime and ordinary Python code open (the runtime socket is AF_UNIX)."""

_REFUSED_FAMILIES = {"AF_ALG": 38, "AF_VSOCK": 40}

# libseccomp's native names (which Docker's includes/excludes use) and the OCI names of their architectures.
_ARCHES = {
    "amd64": "SCMP_ARCH_X86_64", "x86": "SCMP_ARCH_X86", "x32": "SCMP_ARCH_X32", "arm64": "SCMP_ARCH_AARCH64",
    "arm": "SCMP_ARCH_ARM", "ppc64le": "SCMP_ARCH_PPC64LE", "s390x": "SCMP_ARCH_S390X",
    "riscv64": "SCMP_ARCH_RISCV64", "loong64": "SCMP_ARCH_LOONGARCH64",
}

_OCI_RULE_KEYS = ("names", "action", "errnoRet", "args")


def _kernel_tuple(text: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", text)
    if not m:
        raise ConfigError(f"cannot read a kernel version from {text!r} (expected MAJOR.MINOR...)")
    return int(m.group(1)), int(m.group(2))


def resolve(profile: dict[str, Any], *, arch: str, caps: Collection[str], kernel: tuple[int, int]) -> dict[str, Any]:
    """An engine profile (Docker's JSON format) as the OCI ``linux.seccomp`` of one container.

    ``arch`` is libseccomp's native name (``amd64``), ``caps`` the container's
    bounding set, ``kernel`` the (major, minor) its ``minKernel`` conditions
    are compared with. A rule is dropped if ``excludes`` names the arch, any
    of the caps, or a kernel at or below this one; and unless ``includes``
    names the arch, all of its caps are present and the kernel is new enough.
    """
    if arch not in _ARCHES:
        raise ConfigError(f"unknown architecture {arch!r} for a seccomp profile; known: {', '.join(_ARCHES)}")
    if profile.get("architectures") and profile.get("archMap"):
        raise ConfigError("a seccomp profile has both 'architectures' and 'archMap'; it may have only one")
    out: dict[str, Any] = {"defaultAction": profile["defaultAction"]}
    if "defaultErrnoRet" in profile:
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    if profile.get("archMap"):
        for entry in profile["archMap"]:
            if entry["architecture"] == _ARCHES[arch]:
                out["architectures"] = [entry["architecture"], *(entry.get("subArchitectures") or ())]
                break
    else:
        out["architectures"] = list(profile.get("architectures") or ())

    def newer(min_kernel: str) -> bool:
        return kernel >= _kernel_tuple(min_kernel)

    rules = []
    for rule in profile.get("syscalls") or ():
        if rule.get("name") and rule.get("names"):
            raise ConfigError(f"a seccomp rule has both 'name' and 'names': {rule}")
        exc, inc = rule.get("excludes") or {}, rule.get("includes") or {}
        if arch in (exc.get("arches") or ()) or set(exc.get("caps") or ()) & set(caps):
            continue
        if exc.get("minKernel") and newer(exc["minKernel"]):
            continue
        if inc.get("arches") and arch not in inc["arches"]:
            continue
        if not set(inc.get("caps") or ()) <= set(caps):
            continue
        if inc.get("minKernel") and not newer(inc["minKernel"]):
            continue
        oci = {k: rule[k] for k in _OCI_RULE_KEYS if k in rule}
        oci["names"] = list(rule.get("names") or [rule["name"]])
        rules.append(oci)
    out["syscalls"] = rules
    return out


def _arg_matches(cond: dict[str, Any], args: tuple[int, ...]) -> bool:
    value = args[cond["index"]] if cond["index"] < len(args) else 0
    want, two = cond["value"], cond.get("valueTwo", 0)
    return {
        "SCMP_CMP_EQ": lambda: value == want, "SCMP_CMP_NE": lambda: value != want,
        "SCMP_CMP_LT": lambda: value < want, "SCMP_CMP_LE": lambda: value <= want,
        "SCMP_CMP_GT": lambda: value > want, "SCMP_CMP_GE": lambda: value >= want,
        "SCMP_CMP_MASKED_EQ": lambda: value & want == two,
    }[cond["op"]]()


_PRECEDENCE = ["SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
               "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_LOG", "SCMP_ACT_ALLOW"]


def verdict(seccomp: dict[str, Any], name: str, args: Iterable[int] = ()) -> tuple[str, int | None]:
    """What an OCI seccomp config answers ``name(args)`` on its native arch: (action, errno or None).

    Where rules of different actions match, the stricter wins, as in libseccomp.
    """
    argv = tuple(args)
    matched = [r for r in seccomp["syscalls"]
               if name in r["names"] and all(_arg_matches(c, argv) for c in r.get("args") or ())]
    if not matched:
        action, err = seccomp["defaultAction"], seccomp.get("defaultErrnoRet", errno.EPERM)
    else:
        rule = min(matched, key=lambda r: _PRECEDENCE.index(r["action"]))
        action, err = rule["action"], rule.get("errnoRet", errno.EPERM)
    return action, err if action == "SCMP_ACT_ERRNO" else None


def check(seccomp: dict[str, Any]) -> None:
    """Raise ConfigError unless ``seccomp`` refuses and allows what torpor relies on."""
    allow, eperm = ("SCMP_ACT_ALLOW", None), ("SCMP_ACT_ERRNO", errno.EPERM)
    expect = [
        ("clone(SIGCHLD), a fork", verdict(seccomp, "clone", [17]), allow),
        ("clone of a thread", verdict(seccomp, "clone", [0x3D0F00]), allow),
        ("clone(CLONE_NEWUSER)", verdict(seccomp, "clone", [0x10000000 | 17]), eperm),
        ("clone(CLONE_NEWNET)", verdict(seccomp, "clone", [0x40000000 | 17]), eperm),
        ("clone3", verdict(seccomp, "clone3"), ("SCMP_ACT_ERRNO", errno.ENOSYS)),
        ("the default action", (seccomp["defaultAction"], seccomp.get("defaultErrnoRet")), eperm),
    ]
    expect += [(f"{n} (must be refused)", verdict(seccomp, n), eperm) for n in MUST_REFUSE]
    expect += [(f"{n} (CRIU's restorer calls it)", verdict(seccomp, n), allow) for n in CRIU_AFTER_FILTER]
    expect += [(f"socket({f})", verdict(seccomp, "socket", [v]), allow) for f, v in _SOCKET_FAMILIES.items()]
    expect += [(f"socket({f})", verdict(seccomp, "socket", [v]), eperm) for f, v in _REFUSED_FAMILIES.items()]
    wrong = [f"{what}: {got} instead of {want}" for what, got, want in expect if got != want]
    if seccomp.get("architectures") != [NATIVE_ARCH]:
        wrong.append(f"architectures: {seccomp.get('architectures')} instead of [{NATIVE_ARCH}]")
    if wrong:
        raise ConfigError("the task seccomp profile is not what torpor requires (was "
                          f"agent/{ENGINE_PROFILE} changed?): " + "; ".join(wrong))


def narrow(seccomp: dict[str, Any]) -> dict[str, Any]:
    """``seccomp`` without REMOVED and on the native architecture only."""
    out = copy.deepcopy(seccomp)
    out["architectures"] = [NATIVE_ARCH]
    rules = []
    for rule in out["syscalls"]:
        rule["names"] = [n for n in rule["names"] if n not in REMOVED]
        if rule["names"]:
            rules.append(rule)
    out["syscalls"] = rules
    return out


def load_engine_profile() -> dict[str, Any]:
    """Docker's profile as shipped in this package."""
    ref = resources.files("torpor.agent") / ENGINE_PROFILE
    try:
        return json.loads(ref.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read torpor's seccomp profile agent/{ENGINE_PROFILE} ({exc}); "
                          "reinstall torpor, the file is part of the package") from exc


@functools.lru_cache(maxsize=None)
def _task_seccomp(machine: str, kernel: tuple[int, int]) -> dict[str, Any]:
    if machine != "x86_64":
        raise ConfigError(f"torpor's task seccomp profile is made for x86_64 hosts; this one is {machine}")
    profile = narrow(resolve(load_engine_profile(), arch="amd64", caps=(), kernel=kernel))
    check(profile)
    return profile


def task_seccomp() -> dict[str, Any]:
    """The OCI ``linux.seccomp`` of a task container on this host (a fresh copy)."""
    return copy.deepcopy(_task_seccomp(platform.machine(), _kernel_tuple(os.uname().release)))

"""A task that tries what the seccomp profile refuses, then does ordinary work, in rounds.

Each round prints one JSON line: ``refused`` maps each attempt to the errno
name it got ("ALLOWED" if the kernel let it through), ``work`` to "ok" or the
error of threads, subprocess, fork, asyncio and sockets. ROUNDS=0 goes on for
ever (for checkpoint and restore); TARGET_PID is another run's host pid to
ptrace.
"""

import asyncio
import ctypes
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

# x86_64 syscall numbers
SYS = dict(clone=56, clone3=435, unshare=272, mount=165, ptrace=101, keyctl=250, add_key=248, request_key=249,
           bpf=321, perf_event_open=298, setns=308, userfaultfd=323, memfd_secret=447, modify_ldt=154,
           process_vm_readv=310, io_uring_setup=425, pivot_root=155, umount2=166, chroot=161, kexec_load=246,
           init_module=175, open_by_handle_at=304, fsopen=430, clock_settime=227, sethostname=170, reboot=169)
CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID = 0x10000000, 0x40000000, 0x00020000, 0x20000000
PTRACE_ATTACH = 16
RETURN_FDS = {"memfd_secret", "userfaultfd", "io_uring_setup", "perf_event_open", "bpf", "fsopen", "open_by_handle_at"}


_keep = []


def cstr(text):
    """The address of a C string that lives as long as the task."""
    buf = ctypes.create_string_buffer(text)
    _keep.append(buf)
    return ctypes.addressof(buf)


def syscall(name, *args):
    """errno name of a refused call, or "ALLOWED" (a child made by a clone that got through exits at once)."""
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(SYS[name]), *(ctypes.c_long(a) for a in args))
    forks = name in ("clone", "clone3")
    if rc == 0 and forks:
        os._exit(0)  # the child of a clone the filter let through
    if rc >= 0:
        if forks:
            os.waitpid(rc, 0)
        elif name in RETURN_FDS:
            os.close(rc)  # a leaked io_uring or secretmem fd would make the task undumpable
        return "ALLOWED"
    return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))


def clone3(flags):
    args = (ctypes.c_uint64 * 11)()  # struct clone_args, the 88-byte version
    args[0], args[4] = flags, signal.SIGCHLD
    return syscall("clone3", ctypes.addressof(args), ctypes.sizeof(args))


def attempts(child_pid):
    buf = ctypes.create_string_buffer(256)
    iov = (ctypes.c_uint64 * 2)(ctypes.addressof(buf), 256)
    netns = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        refused = {
            "unshare(CLONE_NEWUSER)": syscall("unshare", CLONE_NEWUSER),
            "unshare(CLONE_NEWNET)": syscall("unshare", CLONE_NEWNET),
            "clone(CLONE_NEWUSER)": syscall("clone", CLONE_NEWUSER | signal.SIGCHLD, 0, 0, 0, 0),
            "clone(CLONE_NEWNET)": syscall("clone", CLONE_NEWNET | signal.SIGCHLD, 0, 0, 0, 0),
            "clone(CLONE_NEWNS|CLONE_NEWPID)": syscall("clone", CLONE_NEWNS | CLONE_NEWPID | signal.SIGCHLD, 0, 0, 0, 0),
            "clone3()": clone3(0),
            "clone3(CLONE_NEWUSER)": clone3(CLONE_NEWUSER),
            "mount": syscall("mount", cstr(b"none"), cstr(b"/tmp"), cstr(b"tmpfs"), 0, 0),
            "umount2": syscall("umount2", cstr(b"/proc"), 2),
            "pivot_root": syscall("pivot_root", 0, 0),
            "chroot": syscall("chroot", cstr(b"/tmp")),
            "ptrace(own child)": syscall("ptrace", PTRACE_ATTACH, child_pid, 0, 0),
            "ptrace(other run)": syscall("ptrace", PTRACE_ATTACH, int(os.environ.get("TARGET_PID", "1")), 0, 0),
            "process_vm_readv": syscall("process_vm_readv", child_pid, ctypes.addressof(iov), 1,
                                        ctypes.addressof(iov), 1, 0),
            "keyctl": syscall("keyctl", 0, -3, 0),  # KEYCTL_GET_KEYRING_ID of the session keyring
            "add_key": syscall("add_key", cstr(b"user"), cstr(b"k"), 0, 0, -3),
            "request_key": syscall("request_key", 0, 0, 0, 0),
            "bpf": syscall("bpf", 0, ctypes.addressof(buf), 64),  # BPF_MAP_CREATE
            "perf_event_open": syscall("perf_event_open", ctypes.addressof(buf), 0, -1, -1, 0),
            "setns": syscall("setns", netns, CLONE_NEWNET),
            "userfaultfd": syscall("userfaultfd", os.O_CLOEXEC | 1),  # UFFD_USER_MODE_ONLY
            "memfd_secret": syscall("memfd_secret", 0),
            "modify_ldt": syscall("modify_ldt", 0, ctypes.addressof(buf), 16),  # read
            "io_uring_setup": syscall("io_uring_setup", 1, ctypes.addressof(buf)),
            "kexec_load": syscall("kexec_load", 0, 0, 0, 0),
            "init_module": syscall("init_module", 0, 0, 0),
            "open_by_handle_at": syscall("open_by_handle_at", -100, ctypes.addressof(buf), 0),
            "fsopen": syscall("fsopen", cstr(b"tmpfs"), 0),
            "clock_settime": syscall("clock_settime", 0, ctypes.addressof(buf)),
            "sethostname": syscall("sethostname", ctypes.addressof(buf), 1),
            "reboot": syscall("reboot", 0, 0, 0, 0),
        }
    finally:
        os.close(netns)
    for family in ("AF_ALG", "AF_VSOCK"):
        try:
            socket.socket(getattr(socket, family), socket.SOCK_SEQPACKET if family == "AF_ALG" else socket.SOCK_STREAM).close()
            refused[f"socket({family})"] = "ALLOWED"
        except OSError as exc:
            refused[f"socket({family})"] = errno.errorcode[exc.errno]
    refused["i386 int 0x80"] = compat("i386")
    refused["x32 syscall"] = compat("x32")
    return refused


# A child process makes one system call through a compat entry point: i386 (int 0x80) or x32.
COMPAT = r"""
import ctypes, mmap, sys
if sys.argv[1] == "i386":
    code = bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3])  # mov eax, 20 (i386 getpid); int 0x80; ret
    buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    buf.write(code)
    print(ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))())
else:
    libc = ctypes.CDLL(None, use_errno=True)
    print(libc.syscall(0x40000000 | 39), ctypes.get_errno())  # x32 getpid
"""


def compat(abi):
    """How a child making one syscall through the ``abi`` entry point ended: "SIGSYS" if the filter killed it."""
    proc = subprocess.run([sys.executable, "-c", COMPAT, abi], capture_output=True, text=True)
    return signal.Signals(-proc.returncode).name if proc.returncode < 0 else f"ALLOWED: {proc.stdout.strip()}"


def check(name, fn):
    try:
        fn()
        return "ok"
    except Exception as exc:  # reported, the test says which
        return f"{type(exc).__name__}: {exc}"


def threads():
    results = []
    ts = [threading.Thread(target=lambda i=i: results.append(i * i)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(results) == [i * i for i in range(8)]


def run_subprocess():
    out = subprocess.run(["/bin/sh", "-c", "echo $((6 * 7))"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "42", out
    out = subprocess.run([sys.executable, "-c", "import os; print(os.getpid() > 1)"], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "True", out


def fork():
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7


def run_asyncio():
    async def main():
        async def handle(reader, writer):
            writer.write((await reader.readline()).upper())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello\n")
        line = await reader.readline()
        writer.close()
        server.close()
        await server.wait_closed()
        sleeps = await asyncio.gather(*(asyncio.sleep(0.01, result=i) for i in range(5)))
        await asyncio.to_thread(time.sleep, 0.01)  # the default executor's thread
        return line, sleeps

    line, sleeps = asyncio.run(main())
    assert line == b"HELLO\n" and sleeps == list(range(5)), (line, sleeps)


def sockets():
    a, b = socket.socketpair()
    a.sendall(b"ping")
    assert b.recv(4) == b"ping"
    a.close()
    b.close()
    udp1, udp2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp1.bind(("127.0.0.1", 0))
    udp2.sendto(b"datagram", udp1.getsockname())
    assert udp1.recvfrom(64)[0] == b"datagram"
    udp1.close()
    udp2.close()
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s6:
        s6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as su:
        su.bind("\0torpor-hostile-task")  # an abstract unix socket


def seccomp_mode():
    return [ln.split()[1] for ln in open("/proc/self/status") if ln.startswith("Seccomp:")][0]


def main():
    rounds = int(os.environ.get("ROUNDS", "1"))
    child = subprocess.Popen(["/usr/bin/sleep", "infinity"])
    n = 0
    while rounds == 0 or n < rounds:
        n += 1
        work = {name: check(name, fn) for name, fn in
                (("threads", threads), ("subprocess", run_subprocess), ("fork", fork), ("asyncio", run_asyncio),
                 ("sockets", sockets))}
        report = {"round": n, "pid": os.getpid(), "seccomp": seccomp_mode(), "refused": attempts(child.pid),
                  "work": work}
        print(json.dumps(report), flush=True)
        if rounds == 0:
            time.sleep(0.2)
    child.kill()
    child.wait()
    print("done", flush=True)


main()

"""The sandbox launcher: run as root by the agent, it starts one workload in its own namespaces.

Run as ``python -I -S sandbox_init.py`` with the spec (JSON) on stdin; imports the standard
library only. Three processes, each with one job:

- the **leader** (the agent's child, leader of the workload's process group in the agent's PID
  namespace) unshares a PID, mount and IPC namespace and forks the init; it waits for the init
  and exits only after it, with the workload's exit status (dying by the same signal when the
  workload was killed). So the pid the agent records is the process whose end means the whole
  workload is gone. It ignores SIGTERM/SIGINT/SIGHUP: the group signal reaches the init anyway.
- the **init** (pid 1 of the new PID namespace, same process group, dies with the leader via
  PR_SET_PDEATHSIG) builds the mount view, forks the workload, forwards SIGTERM/SIGINT/SIGHUP/
  SIGQUIT/SIGUSR1/SIGUSR2 to every process of the namespace (``kill(-1)``: once each, even to
  those that called setsid), reaps orphans, and exits when the workload's first process does:
  the kernel then SIGKILLs whatever is left in the namespace before the init's exit completes.
- the **workload** (pid 2, a session of its own inside the namespace) drops to its uid/gid with
  no supplementary groups but the GPU device nodes' (if those are not world-accessible), sets
  no_new_privs, and execs the tenant command with its environment and working directory.

The mount view (private propagation, so nothing reaches the host): every mount read-only; fresh
tmpfs on /tmp, /var/tmp and /dev/shm; an empty read-only tmpfs over each hidden path (the agent's
state dir with its credential, spool, logs and every work dir, and its home); the workload's own
work dir bound back read-write at its path; exposed paths (the agent's Python) bound back
read-only; a /dev with null, zero, full, random, urandom, tty and only the allowed device nodes;
a /proc of the new PID namespace mounted hidepid=2, so not even the init is visible.

The launcher tells the agent on ``ready_fd`` either ``ok`` (the command was executed) or
``error: ...`` (the sandbox could not be built, or the command could not be executed), then closes it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38

O_PATH = getattr(os, "O_PATH", 0o10000000)

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
STANDARD_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
_MOUNT_OPTION_FLAGS = {
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


class SetupError(Exception):
    """The sandbox could not be built; the message says which step failed."""


def _call(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _call(
        _libc.mount(
            source.encode() if source is not None else None,
            target.encode(),
            fstype.encode() if fstype is not None else None,
            flags,
            data.encode() if data is not None else None,
        ),
        f"mount {target}",
    )


def _prctl(option: int, value: int) -> None:
    _call(_libc.prctl(option, value, 0, 0, 0), f"prctl {option}")


def _unescape(field: str) -> str:
    """Mount points in mountinfo escape space, tab, newline and backslash as octal."""
    out, i = [], 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _mounts() -> list[tuple[str, int]]:
    """(mount point, per-mount flags to keep) for every mount of this namespace, outermost first."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            flags = 0
            for option in fields[5].split(","):
                flags |= _MOUNT_OPTION_FLAGS.get(option, 0)
            found.append((_unescape(fields[4]), flags))
    return found


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _closed_ancestor(path: str) -> str | None:
    """The outermost existing directory above ``path`` that others may not search, if any."""
    parts = path.strip("/").split("/")[:-1]
    for i in range(1, len(parts) + 1):
        ancestor = "/" + "/".join(parts[:i])
        try:
            mode = os.stat(ancestor).st_mode
        except FileNotFoundError:
            return None  # below a hidden tmpfs: created 0755 on the way
        if not mode & 0o001:
            return ancestor
    return None


def _bind_fd(fd: int, target: str, flags: int) -> None:
    """Bind what ``fd`` names (an O_PATH fd opened before it was hidden) onto ``target``."""
    _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND)
    _mount(None, target, None, MS_REMOUNT | MS_BIND | flags)


def _make_target(path: str, *, directory: bool) -> None:
    if directory:
        os.makedirs(path, exist_ok=True)
    elif not os.path.lexists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def build_mount_view(spec: dict[str, Any]) -> None:
    """Called by the init, root in a fresh mount namespace; see the module docstring."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # first: nothing below may reach the host
    for point, keep in _mounts():
        if _under(point, "/proc") or _under(point, "/dev"):
            continue  # replaced below
        try:
            _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | keep)
        except SetupError:
            if point == "/":
                raise
            # An overmounted or vanished mount: not reachable from the workload's view anyway.
    cwd: str = spec["cwd"]
    work_fd = os.open(cwd, O_PATH | os.O_DIRECTORY)
    exposed = [(path, os.open(path, O_PATH)) for path in spec["expose"] if os.path.exists(path)]
    devices = [(name, os.open(path, O_PATH)) for name, path in spec["devices"]]
    standard = [(name, os.open(f"/dev/{name}", O_PATH)) for name in STANDARD_DEVICES if os.path.exists(f"/dev/{name}")]

    scratch = [path for path in ("/tmp", "/var/tmp") if os.path.isdir(path)]
    for path in scratch:
        _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    hidden = []
    for path in sorted(spec["hide"], key=len):
        if not os.path.lexists(path):
            continue  # below a path hidden already (or gone): not in this view
        if os.path.isdir(path) and not os.path.islink(path):
            _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=1m")
            hidden.append(path)
        elif os.path.isfile(path):
            _mount("/dev/null", path, None, MS_BIND)
    for path in [cwd, *(path for path, _ in exposed)]:
        # A directory the workload could not traverse anyway (root's 0700 home above the agent's
        # Python) is replaced by an empty one, so what is bound below it can be reached.
        closed = _closed_ancestor(path)
        if closed is not None:
            _mount("tmpfs", closed, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=1m")
            hidden.append(closed)
    _make_target(cwd, directory=True)
    _bind_fd(work_fd, cwd, MS_NOSUID | MS_NODEV)
    for path, fd in exposed:
        _make_target(path, directory=os.path.isdir(f"/proc/self/fd/{fd}"))
        _bind_fd(fd, path, MS_RDONLY | MS_NOSUID | MS_NODEV)
    for path in hidden:
        _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)

    _mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k")
    for name, fd in [*standard, *devices]:
        _make_target(f"/dev/{name}", directory=False)
        _bind_fd(fd, f"/dev/{name}", MS_NOSUID)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1")):
        os.symlink(target, f"/dev/{name}")
    os.symlink("/proc/self/fd/2", "/dev/stderr")
    os.mkdir("/dev/shm")
    _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    _mount(None, "/dev", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC)
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
    for fd in [work_fd, *(fd for _, fd in exposed), *(fd for _, fd in devices), *(fd for _, fd in standard)]:
        os.close(fd)


def exec_workload(spec: dict[str, Any], err_w: int) -> None:
    """In the workload's process: drop privileges and exec; never returns."""
    try:
        os.setsid()
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.closerange(3, err_w)
        os.closerange(err_w + 1, 65536)
        os.setgroups(spec["groups"])
        os.setresgid(spec["gid"], spec["gid"], spec["gid"])
        os.setresuid(spec["uid"], spec["uid"], spec["uid"])
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
        os.chdir(spec["cwd"])
        os.umask(0o077)
        for sig in (*FORWARDED, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        command: list[str] = spec["command"]
        try:
            os.execvpe(command[0], command, spec["env"])
        except OSError as exc:
            os.write(err_w, f"error: cannot execute {command[0]!r}: {exc.strerror or exc}".encode())
    except BaseException as exc:  # noqa: BLE001 - whatever happens here must reach the agent
        os.write(err_w, f"error: sandbox setup failed: {exc}".encode())
    os._exit(127)


def init_main(spec: dict[str, Any], ready: int, status_w: int) -> None:
    """Pid 1 of the workload's namespace; never returns."""
    code = 1
    try:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        try:
            build_mount_view(spec)
        except (SetupError, OSError) as exc:
            os.write(ready, f"error: sandbox setup failed: {exc}".encode())
            os._exit(1)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)

        def forward(signum: int, _frame: object) -> None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(-1, signum)

        for sig in FORWARDED:
            signal.signal(sig, forward)
        child = os.fork()
        if child == 0:
            os.close(err_r)
            os.close(ready)
            os.close(status_w)
            exec_workload(spec, err_w)
        os.close(err_w)
        failure = b""
        while chunk := os.read(err_r, 4096):
            failure += chunk
        os.close(err_r)
        os.write(ready, failure or b"ok")
        os.close(ready)
        while True:
            pid, status = os.wait()
            if pid == child:
                break
        if os.WIFSIGNALED(status):
            os.write(status_w, f"signal {os.WTERMSIG(status)}".encode())
        else:
            os.write(status_w, f"exit {os.WEXITSTATUS(status)}".encode())
        code = 0
    finally:
        os._exit(code)  # the kernel kills what is left of the namespace


def main() -> None:
    spec = json.loads(sys.stdin.buffer.read())
    ready: int = spec["ready_fd"]
    os.set_inheritable(ready, False)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # the group signal reaches the init, which forwards it
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    try:
        _call(_libc.unshare(CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC), "unshare")
    except SetupError as exc:
        os.write(ready, f"error: sandbox setup failed: {exc}".encode())
        sys.exit(1)
    init = os.fork()
    if init == 0:
        os.close(status_r)
        init_main(spec, ready, status_w)
    os.close(status_w)
    os.close(ready)
    _, status = os.waitpid(init, 0)
    result = os.read(status_r, 64).decode().split()
    if result and result[0] == "signal":
        signum = int(result[1])
    elif result:
        sys.exit(int(result[1]))
    elif os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)  # the init was killed (SIGKILL from the agent): so is the workload
    else:
        sys.exit(os.WEXITSTATUS(status) or 1)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    sys.exit(128 + signum)


if __name__ == "__main__":
    main()

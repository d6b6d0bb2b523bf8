"""Run untrusted, model-generated Python programs (HumanEval, MBPP) in a sandbox.

Each program runs in its own process tree, never in the caller's process::

    unshare --user --map-root-user --mount --net --pid --ipc --uts --fork --kill-child
            --mount-proc -- python -I -B sandbox.py --init FOLDER STATUS_FD LIMITS

``unshare`` (util-linux) gives the tree new user, mount, network, pid, IPC and UTS
namespaces; this file, run as the pid namespace's init (``_init_main``), then

- mounts a size-capped tmpfs over the program's new temporary folder (its cwd, HOME and
  TMPDIR), so that writing files cannot fill the disk and nothing is left on it;
- caps the namespace: ``kernel.pid_max`` of the pid namespace (at least 301, the
  kernel's floor; Linux >= 6.14) bounds its processes, ``user.max_user_namespaces`` = 0
  keeps the program from nesting a user namespace of its own;
- remounts every other mount read-only (the stdlib stays importable);
- starts ``python -I -B program.py`` in its own session with the rlimits of ``Limits``
  (RLIMIT_CPU, RLIMIT_AS, RLIMIT_NPROC, RLIMIT_FSIZE, RLIMIT_CORE=0), no capabilities
  at all (bounding set, ambient, permitted: else root of the user namespace could remount
  the filesystem read-write) and no_new_privs;
- reaps orphans, and reports ``ready`` then ``exit CODE`` on a pipe only it holds (the
  program cannot forge its status); when it exits, the kernel kills what is left in the
  pid namespace.

The new network namespace holds only a loopback that is down: no network, not even the
caller's 127.0.0.1. The environment is minimal (PATH, LANG, HOME, TMPDIR, one thread per
BLAS library): no variable of the caller's (no secret) reaches the program.

The caller reads stdout and stderr incrementally, keeping their tails only; over
``Limits.output_bytes`` or at ``Limits.timeout_s`` (counted from ``ready``) it SIGKILLs
the namespace's init through a pidfd (the kernel then kills every process of the pid
namespace, also those that left the process group) and unshare's process group, waits
until the init is gone (it is, only once its namespace is empty) and deletes the folder:
no process and no file outlives ``run_program``.

Where namespaces are not allowed (``kernel.unprivileged_userns_clone=0``,
``user.max_user_namespaces=0``, AppArmor's ``restrict_unprivileged_userns``, a
container's seccomp profile, no util-linux ``unshare``), or the setup above fails in any
step, the init never says ``ready``: ``check_sandbox`` and ``run_program`` raise
``SandboxUnavailable`` naming the reason (unshare's or the init's own message). Nothing
ever runs unisolated, and an infrastructure failure is never a failed test.

Running as root: RLIMIT_NPROC does not apply to uid 0 (the kernel exempts it), so the
pid namespace's ``pid_max`` is then the only process cap (at most 300 processes), and a
kernel without a per-namespace ``pid_max`` makes the sandbox unavailable; the program
also keeps root's file ownership (no capabilities, but it can read root's own files).
Run scoring as an unprivileged user where possible.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import json
import os
import re
import resource
import select
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

# module constants, not arguments, so that a test can point them elsewhere
UNSHARE = shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin") or "/usr/bin/unshare"
NAMESPACE_FLAGS = (
    "--user",
    "--map-root-user",
    "--mount",
    "--net",
    "--pid",
    "--ipc",
    "--uts",
    "--fork",
    "--kill-child",
    "--mount-proc",
)
PROGRAM = "program.py"
# plus HOME and TMPDIR; one thread per BLAS library: RLIMIT_NPROC counts threads, and
# numpy's OpenBLAS would start one per CPU
ENVIRONMENT = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
TAIL_BYTES = 2048
READ_BYTES = 65536
# setting the sandbox up (two Python start-ups, a few mounts) is not the program's time
STARTUP_TIMEOUT_S = 30.0
# how long the namespace may take to die once killed, or once its init has exited
EXIT_GRACE_S = 10.0
# the tmpfs folder holds a few files of the RLIMIT_FSIZE size
FOLDER_FILES = 4
# the kernel refuses a pid_max under 301 (RESERVED_PIDS + 1)
PID_MAX_FLOOR = 301


@dataclass(frozen=True)
class Limits:
    """What one program may use."""

    timeout_s: float = 10.0  # wall clock; the whole namespace is killed at the timeout
    cpu_s: int = 10  # RLIMIT_CPU (SIGXCPU), SIGKILL a second later
    memory_bytes: int = 1 << 30  # RLIMIT_AS, per process
    processes: int = 32  # RLIMIT_NPROC in the user namespace (see the module's note on root)
    file_size_bytes: int = 16 << 20  # RLIMIT_FSIZE; the folder holds FOLDER_FILES such files
    output_bytes: int = 1 << 20  # stdout + stderr; more: killed


@dataclass(frozen=True)
class Outcome:
    """How one program ended."""

    status: str  # "passed", "failed", "timed_out" or "killed"
    reason: str  # empty when passed
    returncode: int | None  # the program's (negative: a signal); None when killed by us
    duration_s: float
    stdout_tail: str
    stderr_tail: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot start here: an error of the run, never a failed test."""


# ---------------------------------------------------------------- the caller's side


def check_sandbox() -> None:
    """Raise ``SandboxUnavailable`` unless a probe program finds itself isolated here."""
    if not sys.platform.startswith("linux"):
        raise SandboxUnavailable(f"the sandbox needs Linux namespaces, not {sys.platform}")
    if not os.access(UNSHARE, os.X_OK):
        raise SandboxUnavailable(f"no executable {UNSHARE} (util-linux's unshare)")
    outcome = run_program(_PROBE, Limits(timeout_s=STARTUP_TIMEOUT_S))
    if outcome.status != "passed":
        raise SandboxUnavailable(f"the sandbox probe found no isolation: {outcome.reason}")


# run in the sandbox by check_sandbox: each assertion is one isolation (LC_CTYPE: Python
# may set it itself, coercing a C locale)
_PROBE = f"ALLOWED = set({sorted({*ENVIRONMENT, 'HOME', 'TMPDIR', 'LC_CTYPE'})!r})\n" + (
    """
import os, socket
assert socket.if_nameindex() == [(1, "lo")], socket.if_nameindex()
assert set(os.environ) <= ALLOWED, sorted(os.environ)
assert os.environ["HOME"] == os.getcwd(), "HOME is not the program's folder"
with open("written", "w") as f:
    f.write("the folder is writable")
for folder in ("/", os.path.dirname(os.getcwd())):
    try:
        open(os.path.join(folder, "llmboard-sandbox-probe"), "w")
    except OSError:
        pass
    else:
        raise AssertionError(folder + " is writable")
status = open("/proc/self/status").read()
for kind in ("CapEff", "CapPrm", "CapBnd"):
    assert kind + ":\\t0000000000000000" in status, "the program has capabilities"
assert os.getppid() == 1, "not in a pid namespace"
assert len(os.listdir("/proc/self/fd")) <= 4, "inherited more than stdin, stdout, stderr"
"""
)


def run_program(source: str, limits: Limits = Limits()) -> Outcome:
    """Run ``source`` as a program in the sandbox; raise ``SandboxUnavailable`` if the
    sandbox cannot start."""
    # realpath: the init finds the folder's mount by the path /proc/self/mountinfo shows
    folder = os.path.realpath(tempfile.mkdtemp(prefix="llmboard-sandbox-"))
    try:
        Path(folder, PROGRAM).write_text(source, encoding="utf-8")
        return _run_in(folder, limits)
    finally:
        _remove_folder(folder)


def run_programs(sources: list[str], limits: Limits = Limits(), workers: int = 2) -> list[Outcome]:
    """Run ``sources`` ``workers`` at a time (threads, each waiting on its sandbox);
    the outcomes in the order of ``sources``."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(run_program, sources, repeat(limits)))


def _run_in(folder: str, limits: Limits) -> Outcome:
    """Start the sandbox on ``folder``, follow it to its end and say how it ended."""
    status_read, status_write = os.pipe()
    start = time.monotonic()
    try:
        proc = _start_sandbox(folder, limits, status_write)
    except BaseException:
        os.close(status_read)
        raise
    finally:
        # only the init may hold the write end: its closing is the init's end
        os.close(status_write)
    run = _Run(proc, status_read, limits)
    try:
        run.follow()
    finally:
        run.stop()
    return run.outcome(time.monotonic() - start)


def _start_sandbox(folder: str, limits: Limits, status_fd: int) -> subprocess.Popen:
    """Start unshare with this file as the namespaces' init."""
    if not sys.executable:
        raise SandboxUnavailable("no Python interpreter path (sys.executable is empty)")
    init = [sys.executable, "-I", "-B", os.path.abspath(__file__), "--init"]
    arguments = [folder, str(status_fd), json.dumps(dataclasses.asdict(limits))]
    try:
        return subprocess.Popen(
            [UNSHARE, *NAMESPACE_FLAGS, "--", *init, *arguments],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=folder,
            env={**ENVIRONMENT, "HOME": folder, "TMPDIR": folder},
            start_new_session=True,
            pass_fds=(status_fd,),
        )
    except OSError as error:
        raise SandboxUnavailable(f"cannot run {UNSHARE}: {error}") from error


class _Run:
    """One started sandbox: reads its pipes, enforces the wall clock and output limits,
    kills it and waits for all its processes."""

    def __init__(self, proc: subprocess.Popen, status_fd: int, limits: Limits) -> None:
        self.proc = proc
        self.limits = limits
        self.status_fd = status_fd
        self.status = bytearray()
        self.stdout_fd, self.stderr_fd = proc.stdout.fileno(), proc.stderr.fileno()
        self.tails = {self.stdout_fd: bytearray(), self.stderr_fd: bytearray()}
        self.output_bytes = 0
        self.started = time.monotonic()
        self.ready_at: float | None = None
        self.init_fd: int | None = None
        self.ended_by: str | None = None  # "timeout" or "output": why we killed it
        self.drained = False

    def follow(self) -> None:
        """Read the pipes until all are closed, or a limit is hit."""
        with selectors.DefaultSelector() as selector:
            for fd in (*self.tails, self.status_fd):
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map() and self.ended_by is None:
                remaining = self._deadline() - time.monotonic()
                if remaining <= 0:
                    self.ended_by = "timeout"
                    return
                for key, _ in selector.select(remaining):
                    chunk = os.read(key.fd, READ_BYTES)
                    if chunk:
                        self._take(key.fd, chunk)
                    else:
                        selector.unregister(key.fd)
            # all pipes closed: unshare, holding stdout and stderr, is ending by itself
            self.drained = self.ended_by is None

    def _deadline(self) -> float:
        if self.ready_at is None:
            return self.started + STARTUP_TIMEOUT_S
        return self.ready_at + self.limits.timeout_s

    def _take(self, fd: int, chunk: bytes) -> None:
        if fd == self.status_fd:
            self._take_status(chunk)
            return
        self.output_bytes += len(chunk)
        tail = self.tails[fd]
        tail += chunk
        del tail[:-TAIL_BYTES]
        if self.output_bytes > self.limits.output_bytes:
            self.ended_by = "output"

    def _take_status(self, chunk: bytes) -> None:
        # only the init writes here, a few short lines
        self.status += chunk[:256]
        if self.ready_at is None and b"ready\n" in self.status:
            self.ready_at = time.monotonic()
            self.init_fd = _open_init(self.proc.pid)

    def stop(self) -> None:
        """Kill the sandbox if it is still running; return once all its processes are
        gone."""
        if not self.drained:  # a limit was hit, or the caller was interrupted
            self._kill()
        try:
            self.proc.wait(timeout=EXIT_GRACE_S)
        except subprocess.TimeoutExpired:
            self._kill()
            self.proc.wait()
        self._await_init()
        os.close(self.status_fd)
        self.proc.stdout.close()
        self.proc.stderr.close()

    def _kill(self) -> None:
        if self.init_fd is None:
            self.init_fd = _open_init(self.proc.pid)
        if self.init_fd is not None:
            # the kernel then kills every process of the init's pid namespace, also those
            # that left unshare's process group
            _ignore_gone(signal.pidfd_send_signal, self.init_fd, signal.SIGKILL)
        if self.proc.returncode is None:
            # not yet reaped, so its process group id cannot be anybody else's
            _ignore_gone(os.killpg, self.proc.pid, signal.SIGKILL)

    def _await_init(self) -> None:
        """Wait for the init to be gone: it is, only once its namespace is empty."""
        if self.init_fd is None:
            return
        poller = select.poll()
        poller.register(self.init_fd, select.POLLIN)
        poller.poll(int(EXIT_GRACE_S * 1000))
        os.close(self.init_fd)
        self.init_fd = None

    def _exit_code(self) -> int | None:
        match = re.search(rb"^exit (-?\d+)$", bytes(self.status), re.MULTILINE)
        return int(match.group(1)) if match else None

    def outcome(self, duration_s: float) -> Outcome:
        stderr = _decode(self.tails[self.stderr_fd])
        if self.ready_at is None:
            raise SandboxUnavailable(_startup_failure(self.proc.returncode, self.ended_by, stderr))
        code = self._exit_code() if self.ended_by is None else None
        status, reason = _classify(code, self.ended_by, stderr, self.limits)
        if code is None and self.ended_by is None:
            reason += f" (unshare's exit status {self.proc.returncode})"
        return Outcome(
            status=status,
            reason=reason,
            returncode=code,
            duration_s=round(duration_s, 3),
            stdout_tail=_decode(self.tails[self.stdout_fd]),
            stderr_tail=stderr,
        )


def _open_init(unshare_pid: int) -> int | None:
    """A pidfd on the namespace's init (unshare's only child), or None if it is gone."""
    try:
        children = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children").read_text().split()
        return os.pidfd_open(int(children[0])) if children else None
    except (OSError, ValueError):
        return None


def _ignore_gone(send, target: int, signum: int) -> None:
    try:
        send(target, signum)
    except ProcessLookupError:
        pass


def _startup_failure(returncode: int | None, ended_by: str | None, stderr: str) -> str:
    if ended_by == "timeout":
        return f"the sandbox did not start within {STARTUP_TIMEOUT_S} s"
    lines = [line for line in stderr.splitlines() if line.strip()][-6:]
    detail = "\n".join(lines) or "no message"
    return f"the sandbox could not start (unshare's exit status {returncode}):\n{detail}"


def _classify(
    code: int | None, ended_by: str | None, stderr: str, limits: Limits
) -> tuple[str, str]:
    """The status and reason of a program that exited with ``code`` (None: killed)."""
    if ended_by == "output":
        return "killed", f"output over {limits.output_bytes} bytes"
    if ended_by == "timeout":
        return "timed_out", f"timed out after {float(limits.timeout_s)} s"
    if code is None:
        return "killed", "the sandbox ended without the program's exit status"
    if code == 0:
        return "passed", ""
    if code > 0:
        return "failed", _last_line(stderr) or f"exit status {code}"
    if -code == signal.SIGXCPU:
        return "timed_out", f"CPU time limit of {limits.cpu_s} s exceeded (SIGXCPU)"
    if -code == signal.SIGKILL:
        return "killed", "killed by SIGKILL (memory or CPU limit?)"
    return "killed", f"killed by {_signal_name(-code)}"


def _last_line(text: str) -> str:
    """The last non-blank line: a traceback's exception, ``AssertionError: ...``."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _decode(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", errors="replace")


def _remove_folder(folder: str) -> None:
    # the program wrote into its tmpfs, gone with its namespace: the folder beneath holds
    # only the caller's program.py
    shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------ the init, in the sandbox's namespaces

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522
# a mount's flags that its remount must repeat (a user namespace cannot clear them)
LOCKED_FLAGS = {b"nosuid": MS_NOSUID, b"nodev": MS_NODEV, b"noexec": MS_NOEXEC}


def _init_main(arguments: list[str]) -> int:
    """Pid 1 of the sandbox: isolate, run the program, report its exit status."""
    folder, status_fd = arguments[0], int(arguments[1])
    limits = Limits(**json.loads(arguments[2]))
    os.set_inheritable(status_fd, False)  # the program must not be able to write a status
    # pid 1 ignores every signal from inside its namespace that it has no handler for
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    libc = _libc()
    # the program runs as the same uid: non-dumpable, the init cannot be ptraced by it
    _prctl(libc, PR_SET_DUMPABLE, 0)
    _mount_folder(libc, folder, limits)
    _cap_namespace(limits)
    _remount_read_only(libc, folder)
    program = _start_program(libc, limits)
    os.write(status_fd, b"ready\n")
    code = _reap(program.pid)
    program.returncode = code  # reaped by _reap, not by Popen
    os.write(status_fd, f"exit {code}\n".encode())
    return 0


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
    libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    libc.capset.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    return libc


def _check(result: int, what: str) -> None:
    if result != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"{what}: {os.strerror(number)}")


def _prctl(libc: ctypes.CDLL, option: int, argument: int = 0) -> None:
    _check(libc.prctl(option, argument, 0, 0, 0), f"prctl({option}, {argument})")


def _mount(
    libc: ctypes.CDLL,
    target: bytes,
    flags: int,
    kind: bytes | None = None,
    options: bytes | None = None,
) -> None:
    _check(libc.mount(kind, target, kind, flags, options), f"mount {target!r}")


def _mount_folder(libc: ctypes.CDLL, folder: str, limits: Limits) -> None:
    """Put a fresh, size-capped tmpfs on the folder, with the program in it."""
    source = Path(folder, PROGRAM).read_bytes()
    size = FOLDER_FILES * limits.file_size_bytes
    options = f"size={size},mode=0700".encode()
    _mount(libc, os.fsencode(folder), MS_NOSUID | MS_NODEV | MS_NOEXEC, b"tmpfs", options)
    os.chdir(folder)  # the tmpfs, not the folder beneath it
    Path(PROGRAM).write_bytes(source)


def _cap_namespace(limits: Limits) -> None:
    """Bound the processes of the pid namespace; forbid nested user namespaces."""
    pid_max = max(PID_MAX_FLOOR, limits.processes + 1)
    try:
        Path("/proc/sys/kernel/pid_max").write_text(str(pid_max))
    except OSError as error:
        # RLIMIT_NPROC still caps the processes, except for root, which it exempts
        if _outer_uid() == 0:
            raise OSError(
                f"running as root, RLIMIT_NPROC does not apply, and this kernel has no "
                f"pid namespace pid_max (Linux >= 6.14) to cap processes: {error}"
            ) from error
    try:
        Path("/proc/sys/user/max_user_namespaces").write_text("0")
    except OSError:
        pass  # a kernel without it: nested namespaces only restrict the program further


def _outer_uid() -> int:
    """The uid this namespace's root is outside it."""
    return int(Path("/proc/self/uid_map").read_text().split()[1])


def _remount_read_only(libc: ctypes.CDLL, folder: str) -> None:
    """Make every mount but the folder's read-only."""
    for target, options in _mount_points():
        if target == os.fsencode(folder):
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for name, flag in LOCKED_FLAGS.items():
            flags |= flag if name in options else 0
        try:
            _mount(libc, target, flags)
        except OSError as error:
            # a mount point the init cannot reach, the program (fewer rights) cannot either
            if error.errno not in (errno.EACCES, errno.ENOENT):
                raise


def _mount_points() -> list[tuple[bytes, list[bytes]]]:
    """Each mount's point and per-mount options, from /proc/self/mountinfo."""
    points = []
    for line in Path("/proc/self/mountinfo").read_bytes().splitlines():
        fields = line.split()
        # the kernel escapes spaces, tabs, newlines and backslashes as \ooo
        target = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), fields[4])
        points.append((target, fields[5].split(b",")))
    return points


def _start_program(libc: ctypes.CDLL, limits: Limits) -> subprocess.Popen:
    """Start the program in its own session (its killpg(0) reaches only its own
    processes), limited and without privileges."""
    return subprocess.Popen(
        [sys.executable, "-I", "-B", PROGRAM],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=lambda: _confine(libc, limits),  # the init runs no threads: safe here
    )


def _confine(libc: ctypes.CDLL, limits: Limits) -> None:
    """In the program's process, before its exec: rlimits, then no privileges."""
    for limit, soft, hard in (
        # the soft CPU limit sends SIGXCPU (reported as such), the hard one SIGKILL
        (resource.RLIMIT_CPU, limits.cpu_s, limits.cpu_s + 1),
        (resource.RLIMIT_AS, limits.memory_bytes, limits.memory_bytes),
        (resource.RLIMIT_NPROC, limits.processes, limits.processes),
        (resource.RLIMIT_FSIZE, limits.file_size_bytes, limits.file_size_bytes),
        (resource.RLIMIT_CORE, 0, 0),
    ):
        _lower_limit(limit, soft, hard)
    _drop_capabilities(libc)


def _lower_limit(limit: int, soft: int, hard: int) -> None:
    # raising a hard limit needs a capability the user namespace does not give
    _, current = resource.getrlimit(limit)
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard, current)
    resource.setrlimit(limit, (soft, hard))


def _drop_capabilities(libc: ctypes.CDLL) -> None:
    """Leave the program no capability, now or after exec, and no way to gain one."""
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    # an empty bounding set: exec as uid 0 would otherwise grant all of them again
    for capability in range(last + 1):
        _prctl(libc, PR_CAPBSET_DROP, capability)
    _prctl(libc, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    _prctl(libc, PR_SET_NO_NEW_PRIVS, 1)
    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable: all empty
    _check(libc.capset(header, data), "capset")


def _reap(program_pid: int) -> int:
    """Wait for the program, reaping orphans meanwhile (as pid 1 must); its exit code."""
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == program_pid:
            return os.waitstatus_to_exitcode(status)


if __name__ == "__main__" and sys.argv[1:2] == ["--init"]:
    sys.exit(_init_main(sys.argv[2:]))

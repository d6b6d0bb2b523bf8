"""The sandbox against real hostile programs: each test checks how the program ended
(status and reason) and that the caller and the machine came to no harm."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from llmboard.tasks import sandbox
from llmboard.tasks.sandbox import (
    Limits,
    Outcome,
    SandboxUnavailable,
    check_sandbox,
    run_program,
    run_programs,
)

from conftest import missing_service

# the tests that break the sandbox on purpose: they need no working sandbox
WITHOUT_SANDBOX = {
    "test_without_unshare_the_sandbox_is_unavailable",
    "test_a_namespace_that_cannot_be_made_is_an_error_not_a_failure",
}


@pytest.fixture(scope="module")
def sandbox_problem() -> str | None:
    """Why the sandbox cannot work here, checked once; None where it works."""
    try:
        check_sandbox()
    except SandboxUnavailable as error:
        return str(error)
    return None


@pytest.fixture(autouse=True)
def _sandbox_here(request, sandbox_problem):
    if sandbox_problem and request.function.__name__ not in WITHOUT_SANDBOX:
        missing_service(f"no sandbox here: {sandbox_problem}")


def _processes_with(marker: str) -> list[int]:
    """The pids of processes whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass  # gone meanwhile
    return found


def _sleeper(marker: str) -> str:
    """Program text starting a detached process (own session) with ``marker`` in its
    command line: a leftover test can find it in /proc."""
    return (
        "import os, sys\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        f"    os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', {marker!r}])\n"
    )


# ------------------------------------------------------------------ 1: plain programs


def test_a_correct_program_passes():
    outcome = run_program("def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\nprint('ok')")
    assert (outcome.status, outcome.reason, outcome.returncode) == ("passed", "", 0)
    assert outcome.stdout_tail == "ok\n"
    assert outcome.to_dict()["status"] == "passed"
    assert set(outcome.to_dict()) == {f.name for f in Outcome.__dataclass_fields__.values()}


def test_an_assertion_failure_fails_with_its_exception():
    outcome = run_program("assert 1 + 1 == 3")
    assert (outcome.status, outcome.reason, outcome.returncode) == ("failed", "AssertionError", 1)
    assert "Traceback" in outcome.stderr_tail


def test_an_exception_is_the_reason():
    outcome = run_program("print(x)")
    assert (outcome.status, outcome.reason) == ("failed", "NameError: name 'x' is not defined")


def test_a_syntax_error_fails():
    outcome = run_program("def f(:\n    pass")
    assert outcome.status == "failed"
    assert outcome.reason.startswith("SyntaxError")


def test_an_exit_status_without_message_is_the_reason():
    outcome = run_program("import sys\nsys.exit(3)")
    assert (outcome.status, outcome.reason, outcome.returncode) == ("failed", "exit status 3", 3)


# ------------------------------------------------------------------ 2: time


def test_an_endless_loop_times_out():
    start = time.monotonic()
    outcome = run_program("while True: pass", Limits(timeout_s=2))
    elapsed = time.monotonic() - start
    assert (outcome.status, outcome.reason) == ("timed_out", "timed out after 2.0 s")
    assert outcome.returncode is None
    assert 2 <= elapsed < 4.5


def test_the_cpu_limit_is_a_timeout():
    outcome = run_program("while True: pass", Limits(timeout_s=10, cpu_s=1))
    assert outcome.status == "timed_out"
    assert outcome.reason == "CPU time limit of 1 s exceeded (SIGXCPU)"
    assert outcome.duration_s < 5


# ------------------------------------------------------------------ 3: memory


def test_a_10_gb_allocation_does_not_pass():
    start = time.monotonic()
    outcome = run_program("b = bytearray(10 * 1024**3)\nprint('allocated')")
    assert (outcome.status, outcome.reason) == ("failed", "MemoryError")
    assert "allocated" not in outcome.stdout_tail
    assert time.monotonic() - start < 5


# ------------------------------------------------------------------ 4: processes


def test_a_fork_bomb_is_contained_and_leaves_no_process():
    marker = f"llmboard-sandbox-test-{uuid.uuid4().hex}"
    bomb = _sleeper(marker) + (
        "import time\n"
        "refused = False\n"
        "while True:\n"
        "    try:\n"
        "        os.fork()\n"
        "    except OSError as error:\n"
        "        if not refused:\n"
        "            refused = True\n"
        "            alive = sum(name.isdigit() for name in os.listdir('/proc'))\n"
        "            print('fork refused', type(error).__name__, alive, flush=True)\n"
        "        time.sleep(0.01)\n"
    )
    start = time.monotonic()
    outcome = run_program(bomb, Limits(timeout_s=2))
    assert (outcome.status, outcome.reason) == ("timed_out", "timed out after 2.0 s")
    assert time.monotonic() - start < 6
    # a limit refused forks: RLIMIT_NPROC (32), or for root the pid namespace's pid_max
    counts = [
        int(n) for n in re.findall(r"fork refused BlockingIOError (\d+)", outcome.stdout_tail)
    ]
    assert counts and max(counts) <= sandbox.PID_MAX_FLOOR
    assert _processes_with(marker) == []


def test_processes_left_by_a_finished_program_are_killed():
    marker = f"llmboard-sandbox-test-{uuid.uuid4().hex}"
    outcome = run_program(_sleeper(marker) + "import time\ntime.sleep(0.3)\nprint('done')")
    assert (outcome.status, outcome.reason, outcome.stdout_tail) == ("passed", "", "done\n")
    assert _processes_with(marker) == []


# ------------------------------------------------------------------ 5: network


class _Server:
    """A real TCP server on 127.0.0.1: records what any connection sends it."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.socket.settimeout(0.1)
        self.port = self.socket.getsockname()[1]
        self.received = bytearray()
        self.connections = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                connection, _ = self.socket.accept()
            except TimeoutError:
                continue
            with connection:
                self.connections += 1
                connection.settimeout(2)
                self.received += connection.recv(1024)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
        self.socket.close()


@pytest.fixture
def server():
    served = _Server()
    yield served
    served.close()


def test_no_network_not_even_the_callers_localhost(server):
    program = (
        "import socket\n"
        f"connection = socket.create_connection(('127.0.0.1', {server.port}), timeout=3)\n"
        "connection.sendall(b'leak')\n"
    )
    outcome = run_program(program)
    assert outcome.status == "failed"
    assert re.match(r"(OSError|ConnectionRefusedError): .*(unreachable|refused)", outcome.reason)
    time.sleep(0.3)  # the server thread's accept polls every 0.1 s
    assert (server.connections, bytes(server.received)) == (0, b"")
    # the server is real: the caller reaches it
    with socket.create_connection(("127.0.0.1", server.port), timeout=3) as connection:
        connection.sendall(b"caller")
    deadline = time.monotonic() + 3
    while bytes(server.received) != b"caller" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (server.connections, bytes(server.received)) == (1, b"caller")


# ------------------------------------------------------------------ 6: the filesystem


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    return {
        p.name: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode)
        for p in sorted(folder.iterdir())
    }


def test_writes_outside_its_folder_fail(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    board = results / "board.csv"
    board.write_bytes(b"model,score\nsmol,0.5\n")
    before = _snapshot(results)
    program = f"""
import ctypes, os
RESULTS, BOARD = {str(results)!r}, {str(board)!r}
libc = ctypes.CDLL(None, use_errno=True)
escaped = []

def attempt(name, action):
    try:
        action()
    except OSError as error:
        print(name, "refused:", error)
    else:
        escaped.append(name)

def call(result):
    if result != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))

attempt("create", lambda: open(os.path.join(RESULTS, "new.csv"), "w").close())
attempt("mkdir", lambda: os.mkdir(os.path.join(RESULTS, "sub")))
attempt("unlink", lambda: os.unlink(BOARD))
attempt("rename", lambda: os.rename(BOARD, BOARD + ".old"))
attempt("chmod", lambda: os.chmod(BOARD, 0o777))
attempt("write /tmp", lambda: open("/tmp/llmboard-sandbox-escape", "w").close())
# MS_REMOUNT | MS_BIND without MS_RDONLY: make / writable again
attempt("remount", lambda: call(libc.mount(None, b"/", None, 32 | 4096, None)))
# CLONE_NEWUSER | CLONE_NEWNS: a namespace of its own, with capabilities in it
attempt("nested namespace", lambda: call(libc.unshare(0x10000000 | 0x00020000)))
with open("mine.txt", "w") as f:
    f.write("writable")
print("own folder:", open("mine.txt").read(), os.getcwd())
print("escaped:", escaped)
with open(BOARD, "wb") as f:
    f.write(b"overwritten")
"""
    outcome = run_program(program)
    assert outcome.status == "failed"
    assert outcome.reason == f"OSError: [Errno 30] Read-only file system: '{board}'"
    assert "escaped: []" in outcome.stdout_tail
    own = re.search(r"own folder: writable (\S+)", outcome.stdout_tail)
    assert own and not Path(own.group(1)).exists()  # deleted afterwards
    assert _snapshot(results) == before
    assert not Path("/tmp/llmboard-sandbox-escape").exists()


# ------------------------------------------------------------------ 7: the environment


def test_an_environment_secret_is_not_visible(monkeypatch):
    monkeypatch.setenv("LLMBOARD_TEST_SECRET", "s3cr3t")
    program = (
        "import os\n"
        "value = os.environ.get('LLMBOARD_TEST_SECRET')\n"
        "print('secret:', value)\n"
        "print('names:', ','.join(sorted(os.environ)))\n"
        "print('folders:', os.getcwd(), os.environ['HOME'], os.environ['TMPDIR'])\n"
        "assert value is None\n"
        "assert 's3cr3t' not in repr(dict(os.environ))\n"
    )
    outcome = run_program(program)
    assert (outcome.status, outcome.reason) == ("passed", "")
    assert "s3cr3t" not in outcome.stdout_tail + outcome.stderr_tail
    assert "secret: None" in outcome.stdout_tail
    names = re.search(r"names: (\S+)", outcome.stdout_tail).group(1).split(",")
    threads = {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"}
    assert set(names) <= {"PATH", "LANG", "HOME", "TMPDIR", "LC_CTYPE"} | threads
    cwd, home, tmpdir = re.search(r"folders: (.*)", outcome.stdout_tail).group(1).split()
    assert cwd == home == tmpdir and "llmboard-sandbox-" in cwd


# ------------------------------------------------------------------ 8: signals


def test_killing_its_parents_harms_nobody():
    sentinel = subprocess.Popen(["sleep", "30"])
    try:
        program = f"""
import os, signal
attempts = [
    ("parent", lambda: os.kill(os.getppid(), signal.SIGKILL)),
    ("caller", lambda: os.kill({os.getpid()}, signal.SIGKILL)),
    ("caller's group", lambda: os.killpg({os.getpgrp()}, signal.SIGKILL)),
    ("sentinel", lambda: os.kill({sentinel.pid}, signal.SIGKILL)),
    ("everyone", lambda: os.kill(-1, signal.SIGKILL)),
]
for name, attempt in attempts:
    try:
        attempt()
        print(name, "sent", flush=True)
    except OSError as error:
        print(name, "refused", type(error).__name__, flush=True)
os.killpg(0, signal.SIGKILL)
"""
        outcome = run_program(program)
        assert outcome.status == "killed"
        assert outcome.reason.startswith("killed by SIGKILL")
        assert outcome.returncode == -signal.SIGKILL
        # the pids of the caller and the sentinel do not exist in its pid namespace
        for name in ("caller", "caller's group", "sentinel"):
            assert f"{name} refused ProcessLookupError" in outcome.stdout_tail
        assert sentinel.poll() is None
        os.kill(os.getpid(), 0)  # the caller, alive
    finally:
        sentinel.kill()
        sentinel.wait()


# ------------------------------------------------------------------ 9: output


def test_a_gigabyte_of_output_is_killed():
    start = time.monotonic()
    outcome = run_program("import sys\nwhile True: sys.stdout.write('x' * 65536)")
    assert (outcome.status, outcome.reason) == ("killed", "output over 1048576 bytes")
    assert time.monotonic() - start < 5
    assert 0 < len(outcome.stdout_tail) <= sandbox.TAIL_BYTES
    assert len(outcome.stderr_tail) <= sandbox.TAIL_BYTES


# ------------------------------------------------------------------ 10: in parallel


def test_run_programs_runs_in_parallel_in_input_order():
    sources = [f"import time\ntime.sleep(1)\nprint({i})\nassert {i} != 2" for i in range(4)]
    start = time.monotonic()
    outcomes = run_programs(sources, workers=2)
    elapsed = time.monotonic() - start
    assert [o.stdout_tail for o in outcomes] == ["0\n", "1\n", "2\n", "3\n"]
    assert [o.status for o in outcomes] == ["passed", "passed", "failed", "passed"]
    assert outcomes[2].reason == "AssertionError"
    assert elapsed < 3.6  # one at a time: over 4 s


# ------------------------------------------------------------------ 11: availability


def test_check_sandbox_passes_here():
    check_sandbox()


def test_without_unshare_the_sandbox_is_unavailable(monkeypatch):
    monkeypatch.setattr(sandbox, "UNSHARE", "/nonexistent/unshare")
    with pytest.raises(SandboxUnavailable, match="/nonexistent/unshare"):
        check_sandbox()
    with pytest.raises(SandboxUnavailable, match="cannot run /nonexistent/unshare"):
        run_program("print('never runs')")


def test_a_namespace_that_cannot_be_made_is_an_error_not_a_failure(monkeypatch):
    # unshare runs and fails (here: an option it refuses), as where namespaces are not allowed
    monkeypatch.setattr(sandbox, "NAMESPACE_FLAGS", (*sandbox.NAMESPACE_FLAGS, "--no-such-option"))
    with pytest.raises(SandboxUnavailable, match="could not start"):
        run_program("print('never runs')")
    with pytest.raises(SandboxUnavailable, match="could not start"):
        check_sandbox()

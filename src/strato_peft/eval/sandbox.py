"""Run untrusted, model-written Python programs (HumanEval completions plus their tests) in a contained child.

Each program runs in its own process, fresh temporary directory and session, with an empty environment.
Containment is layered; ``isolation_report()`` says which layers this host actually provides:

* OS user (root callers only): the child drops to a dedicated unprivileged uid/gid taken from a pool
  (``SANDBOX_UID_BASE`` + slot, one slot per concurrent run, locked with flock across processes). It can then
  not write root-owned files (project, results), read other processes' environ, or signal the caller, and
  RLIMIT_NPROC (counted per uid, ignored for root) bounds fork bombs. NO_NEW_PRIVS blocks setuid binaries.
* Namespaces (unshare in preexec_fn): an empty network namespace (no interface up: nothing is reachable,
  127.0.0.1 included), a PID namespace whose init reaps every process and whose exit kills the rest, and,
  only when the interpreter sits under a directory the sandbox uid cannot enter (e.g. pyenv in /root), a
  mount namespace that covers that directory with an empty tmpfs and bind-mounts just the interpreter
  prefix (read-only) back at the same path.
* rlimits (preexec_fn): CPU time, address space, file size, processes, open files; core dumps off.
* Python prelude: replaces the socket constructors and resolvers so plain network code fails fast even
  where no network namespace could be made (bypassable by ctypes; the namespace is the real barrier).
* Caller side: wall-clock timeout, SIGKILL of every sandbox-uid process and the process group, bounded
  output capture, removal of the working directory and of the uid's leftovers in /tmp, /var/tmp, /dev/shm.

Fallbacks: a failed unshare is silently skipped (the prelude guard still blocks ``socket``). Not root: no
uid switch; the child tries an unprivileged user namespace to get the network and PID namespaces, and
RLIMIT_NPROC is set to the caller uid's current process count plus ``max_processes``. If the sandbox uid
cannot start the interpreter at all, runs continue as root with rlimits only and a RuntimeWarning is issued.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import resource
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

__all__ = [
    "SANDBOX_UID_BASE",
    "SANDBOX_UID_SLOTS",
    "SandboxLimits",
    "SandboxResult",
    "isolation_report",
    "run_many",
    "run_program",
]

#: First uid (and gid) of the sandbox pool: above systemd's container range, below 2**31, owned by nobody.
SANDBOX_UID_BASE = 1_900_000_000
#: Number of pool uids, i.e. the most concurrent sandboxed runs on this machine (across processes).
SANDBOX_UID_SLOTS = 64

PROGRAM_FILE = "program.py"
_DRAIN_GRACE_S = 0.5  # after the program ends, how long to wait for its pipes to close
_REAP_GRACE_S = 0.5  # after killing the namespace, how long the direct child gets to reap and exit

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_MS_RDONLY = 1
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_REMOUNT = 32
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38
_F_SETPIPE_SZ = 1031

# libc entry points are resolved here, in the parent: preexec_fn must not import or load anything.
try:
    _LIBC: Optional[ctypes.CDLL] = ctypes.CDLL(None, use_errno=True)
    _LIBC.unshare.argtypes = [ctypes.c_int]
    _LIBC.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
    _LIBC.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
except (OSError, AttributeError):  # pragma: no cover - non-glibc platforms
    _LIBC = None


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits for one sandboxed program; every breach ends that program, never the caller."""

    timeout_s: float = 10.0  # wall clock, enforced by the caller (SIGKILL of the whole sandbox)
    cpu_time_s: int = 10  # RLIMIT_CPU per process (SIGXCPU, then SIGKILL one second later)
    memory_bytes: int = 1 << 30  # RLIMIT_AS per process: large allocations raise MemoryError
    max_processes: int = 64  # RLIMIT_NPROC for the sandbox uid (threads count too): fork-bomb containment
    max_file_bytes: int = 10 << 20  # RLIMIT_FSIZE: no single file written may grow past this
    max_output_bytes: int = 64 << 10  # stdout and stderr each keep at most this much (head and tail)
    max_open_files: int = 256  # RLIMIT_NOFILE

    def __post_init__(self) -> None:
        for name in ("timeout_s", "cpu_time_s", "memory_bytes", "max_processes", "max_file_bytes",
                     "max_output_bytes", "max_open_files"):
            if getattr(self, name) <= 0:
                raise ValueError(f"SandboxLimits.{name} must be positive, got {getattr(self, name)!r}")
        if self.max_processes < 4:
            raise ValueError("SandboxLimits.max_processes must be at least 4 (the sandbox itself uses 3)")


DEFAULT_LIMITS = SandboxLimits()


@dataclass
class SandboxResult:
    """Outcome of one program: ``passed`` only for exit code 0 within every limit; ``status`` says why not."""

    passed: bool
    status: str  # "passed" | "failed" | "timeout" | "memory" | "killed" | "error"
    returncode: Optional[int]  # negative: killed by that signal; None: never started or not reaped
    stdout: str
    stderr: str
    duration_s: float
    truncated: bool = False  # some stdout/stderr was dropped (over max_output_bytes)


# --------------------------------------------------------------------------------------------------------------
# The prelude: runs in the child interpreter before the program, already under the sandbox uid and rlimits.
# Process layout: outer (our direct child, outside the PID namespace) -> init (pid 1 of the namespace: reaps
# everything, its exit kills everything) -> the program (pid 2). Without a PID namespace the middle is the
# program itself. The outer process reproduces the program's exit status (code or signal).
_PRELUDE = r'''
import os, sys

def _guard_network():
    import socket, _socket
    def _denied(*args, **kwargs):
        raise PermissionError(13, "network access is disabled in this sandbox")
    class _DeniedSocket(_socket.socket):
        def __init__(self, *args, **kwargs):
            _denied()
    for mod in (socket, _socket):
        for name in ("socket", "SocketType"):
            setattr(mod, name, _DeniedSocket)
        for name in ("socketpair", "fromfd", "create_connection", "create_server", "getaddrinfo",
                     "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
            if hasattr(mod, name):
                setattr(mod, name, _denied)

def _die_with_parent():
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
    except Exception:
        pass

def _forward(status):
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            import signal
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)

def _supervise():
    r, w = os.pipe()
    child = os.fork()
    if child:
        os.close(w)
        _, status = os.waitpid(child, 0)
        data = os.read(r, 64)
        _forward(int(data) if data else status)
    os.close(r)
    _die_with_parent()
    if os.getpid() == 1:
        program = os.fork()
        if program:
            while True:
                try:
                    pid, status = os.waitpid(-1, 0)
                except ChildProcessError:
                    os._exit(1)
                if pid == program:
                    os.write(w, str(status).encode())
                    os._exit(0)
    os.close(w)

def _run_program(path):
    with open(path, "rb") as f:
        source = f.read()
    sys.argv = [path]
    scope = {"__name__": "__main__", "__file__": path, "__builtins__": __builtins__, "__doc__": None}
    try:
        exec(compile(source, path, "exec"), scope)
    except SystemExit:
        raise
    except BaseException as exc:
        import traceback
        traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next)
        sys.exit(1)

_guard_network()
_supervise()
_run_program(%r)
''' % PROGRAM_FILE


@dataclass(frozen=True)
class _Plan:
    """How this host isolates a run (decided once per process): uid switch, interpreter exposure, executable."""

    drop_privileges: bool
    executable: str
    expose_cover: Optional[str] = None  # directory to cover with tmpfs so the sandbox uid reaches the prefix
    expose_prefix: Optional[str] = None
    expose_mkdirs: tuple[str, ...] = ()  # directories to create inside the tmpfs, outermost first
    note: str = ""


_PLAN: Optional[_Plan] = None
_PLAN_LOCK = threading.Lock()
_REPORT: Optional[dict[str, Any]] = None


def _others_can_enter(path: str) -> bool:
    """True when every directory from / down to ``path`` is searchable by a uid with no owner/group rights."""
    parts = os.path.abspath(path).split(os.sep)
    for i in range(1, len(parts) + 1):
        d = os.sep + os.path.join(*parts[1:i]) if i > 1 else os.sep
        try:
            if not os.stat(d).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def _static_plan() -> _Plan:
    """Choose the interpreter and, for root callers, how the sandbox uid can reach it."""
    executable = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    if os.geteuid() != 0:
        return _Plan(drop_privileges=False, executable=executable, note="not root: no uid switch")
    prefix = os.path.realpath(sys.base_prefix)
    stdlib = os.path.realpath(os.path.dirname(os.__file__))
    needed = [os.path.dirname(executable), stdlib]
    if all(_others_can_enter(p) for p in needed) and os.stat(executable).st_mode & stat.S_IXOTH:
        return _Plan(drop_privileges=True, executable=executable)
    # Find the outermost ancestor of the prefix that others cannot enter; cover it, re-expose the prefix.
    inside = [executable, stdlib]
    if not all(p.startswith(prefix + os.sep) for p in inside):
        return _Plan(False, executable, note=f"interpreter {executable} is outside its prefix {prefix}")
    ancestors = []
    d = os.path.dirname(prefix)
    while d != os.sep:
        ancestors.append(d)
        d = os.path.dirname(d)
    ancestors.reverse()  # outermost first
    blocked = [a for a in ancestors if not os.stat(a).st_mode & stat.S_IXOTH]
    if not blocked:
        return _Plan(False, executable, note=f"interpreter prefix {prefix} is not readable by other users")
    cover = blocked[0]
    rel = os.path.relpath(prefix, cover).split(os.sep)
    mkdirs = tuple(os.path.join(cover, *rel[:i]) for i in range(1, len(rel) + 1))
    return _Plan(True, executable, expose_cover=cover, expose_prefix=prefix, expose_mkdirs=mkdirs)


def _plan() -> _Plan:
    """The isolation plan, probed once: if the sandbox uid cannot start Python, fall back to root + rlimits."""
    global _PLAN
    with _PLAN_LOCK:
        if _PLAN is None:
            plan = _static_plan()
            if plan.drop_privileges:
                probe = _run(
                    "import os\nassert os.getuid() != 0\n",
                    SandboxLimits(timeout_s=20.0), plan,
                )
                if not probe.passed:
                    note = f"sandbox uid could not run the interpreter ({probe.status}): {probe.stderr[-500:]}"
                    warnings.warn(f"strato_peft sandbox: {note}; running programs as root with rlimits only",
                                  RuntimeWarning, stacklevel=3)
                    plan = _Plan(False, plan.executable, note=note)
            _PLAN = plan
        return _PLAN


def isolation_report() -> dict[str, Any]:
    """Which containment layers a sandboxed program actually gets on this host (probed once, cached)."""
    global _REPORT
    if _REPORT is not None:
        return dict(_REPORT)
    plan = _plan()
    probe = _run(
        "import os\n"
        "print(os.getuid(), os.getpid(), os.readlink('/proc/self/ns/net'), os.readlink('/proc/self/ns/mnt'))\n",
        SandboxLimits(timeout_s=20.0), plan,
    )
    uid = pid = None
    net_ns = mnt_ns = ""
    if probe.passed:
        fields = probe.stdout.split()
        uid, pid, net_ns, mnt_ns = int(fields[0]), int(fields[1]), fields[2], fields[3]
    report = {
        "working": probe.passed,
        "unprivileged_uid": uid is not None and uid != 0 and plan.drop_privileges,
        "network_namespace": bool(net_ns) and net_ns != os.readlink("/proc/self/ns/net"),
        "pid_namespace": pid == 2,
        "mount_namespace": bool(mnt_ns) and mnt_ns != os.readlink("/proc/self/ns/mnt"),
        "python_socket_guard": True,
        "rlimits": True,
        "executable": plan.executable,
        "note": plan.note or (probe.stderr[-500:] if not probe.passed else ""),
    }
    _REPORT = report
    return dict(report)


# --------------------------------------------------------------------------------------------------------------
# Child-side setup (runs in preexec_fn: after fork, before exec, still as the caller's uid).


def _libc_call(name: str, *args: Any) -> None:
    """Call a libc function resolved at import time; raise OSError on failure."""
    if _LIBC is None:
        raise OSError(errno.ENOSYS, f"libc unavailable for {name}")
    if getattr(_LIBC, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")


def _try_unshare(flags: int) -> bool:
    """unshare(2) that reports failure instead of raising: optional layers fall back silently."""
    try:
        _libc_call("unshare", flags)
        return True
    except OSError:
        return False


def _expose_interpreter(plan: _Plan) -> None:
    """In a new mount namespace, hide ``expose_cover`` under a tmpfs and bind the interpreter prefix back."""
    if not (plan.expose_cover and plan.expose_prefix):
        return
    _libc_call("unshare", _CLONE_NEWNS)
    _libc_call("mount", None, b"/", None, _MS_REC | _MS_PRIVATE, None)  # nothing propagates to the host
    fd = os.open(plan.expose_prefix, os.O_PATH | os.O_DIRECTORY)
    try:
        _libc_call("mount", b"tmpfs", plan.expose_cover.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV,
                   b"mode=0755,size=64k")
        for d in plan.expose_mkdirs:
            os.mkdir(d)
            os.chmod(d, 0o755)  # the umask given to Popen would make it 0700
        _libc_call("mount", f"/proc/self/fd/{fd}".encode(), plan.expose_prefix.encode(), None,
                   _MS_BIND | _MS_REC, None)
    finally:
        os.close(fd)
    for target, flags in ((plan.expose_prefix, _MS_REMOUNT | _MS_BIND | _MS_RDONLY),
                          (plan.expose_cover, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)):
        try:
            _libc_call("mount", None, target.encode(), None, flags, None)
        except OSError:
            pass  # read-only is a bonus: the sandbox uid cannot write root's 0755 files anyway


def _make_preexec(plan: _Plan, uid: Optional[int], rlimits: list[tuple[int, int]]) -> Callable[[], None]:
    """The preexec_fn: namespaces, then rlimits, then drop to the sandbox uid, then no-new-privs."""

    def preexec() -> None:
        if plan.drop_privileges:
            if plan.expose_cover:
                _expose_interpreter(plan)  # required: without it the sandbox uid cannot exec Python
        else:
            _try_unshare(_CLONE_NEWUSER)  # unprivileged callers need a user namespace for the others
        _try_unshare(_CLONE_NEWNET)
        _try_unshare(_CLONE_NEWPID)  # applies to the children of the exec'd prelude
        for res, value in rlimits:
            resource.setrlimit(res, (value, value + 1 if res == resource.RLIMIT_CPU else value))
        if plan.drop_privileges and uid is not None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        try:
            _libc_call("prctl", _PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            _libc_call("prctl", _PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # after setuid, which clears it
        except OSError:
            pass

    return preexec


# --------------------------------------------------------------------------------------------------------------
# Caller-side helpers.


class _UidSlot:
    """A pool uid held exclusively (flock on a per-slot file) for the duration of one run."""

    _DIR = os.path.join(tempfile.gettempdir(), "strato-sandbox-uids")

    def __init__(self) -> None:
        os.makedirs(self._DIR, mode=0o700, exist_ok=True)
        st = os.lstat(self._DIR)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise RuntimeError(f"{self._DIR} must be a private directory owned by uid {os.geteuid()}")
        self.uid = -1
        self._fd = -1
        start = (os.getpid() + threading.get_ident()) % SANDBOX_UID_SLOTS
        deadline = time.monotonic() + 60.0
        while self._fd < 0:
            for i in range(SANDBOX_UID_SLOTS):
                slot = (start + i) % SANDBOX_UID_SLOTS
                fd = os.open(os.path.join(self._DIR, f"slot-{slot}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    continue
                self.uid, self._fd = SANDBOX_UID_BASE + slot, fd
                break
            else:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"all {SANDBOX_UID_SLOTS} sandbox uids are busy")
                time.sleep(0.05)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing drops the flock
            self._fd = -1


def _processes_of_uid(uid: int) -> list[tuple[int, bool]]:
    """(pid, is_zombie) for every process whose real, effective or saved uid is ``uid``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as f:
                data = f.read()
        except OSError:
            continue
        uids = state = None
        for line in data.split(b"\n"):
            if line.startswith(b"State:"):
                state = line.split()[1]
            elif line.startswith(b"Uid:"):
                uids = {int(x) for x in line.split()[1:4]}
                break
        if uids and uid in uids:
            found.append((int(name), state == b"Z"))
    return found


def _kill_pid_if_uid(pid: int, uid: int) -> None:
    """SIGKILL ``pid`` only if it still belongs to ``uid`` (pidfd makes the check race-free where available)."""
    pidfd = -1
    try:
        if hasattr(os, "pidfd_open"):
            pidfd = os.pidfd_open(pid)
        with open(f"/proc/{pid}/status", "rb") as f:
            line = next(ln for ln in f.read().split(b"\n") if ln.startswith(b"Uid:"))
        if uid not in {int(x) for x in line.split()[1:4]}:
            return
        if pidfd >= 0:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except (OSError, StopIteration):
        pass
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def _kill_uid(uid: int, exclude: frozenset[int] = frozenset()) -> None:
    """SIGKILL every live process of the sandbox uid (repeatedly, so forks racing the scan die too)."""
    for _ in range(100):
        live = [pid for pid, zombie in _processes_of_uid(uid) if not zombie and pid not in exclude]
        if not live:
            return
        for pid in live:
            _kill_pid_if_uid(pid, uid)
        time.sleep(0.005)


def _count_processes_of_uid(uid: int) -> int:
    """How many processes (zombies included) RLIMIT_NPROC already counts for ``uid``."""
    return len(_processes_of_uid(uid))


def _remove_files_of_uid(uid: int) -> None:
    """Delete what the sandbox uid left in the world-writable temp directories (top level)."""
    for base in ("/tmp", "/var/tmp", "/dev/shm"):
        try:
            entries = list(os.scandir(base))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except OSError:
                pass


class _CappedBuffer:
    """Keeps the first 3/4 and the last 1/4 of ``cap`` bytes of a stream; counts what it drops."""

    def __init__(self, cap: int) -> None:
        self.head_cap = cap - cap // 4
        self.tail_cap = cap // 4
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk and self.tail_cap:
            self.tail += chunk[-self.tail_cap:]
            if len(self.tail) > self.tail_cap:
                del self.tail[: len(self.tail) - self.tail_cap]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def text(self) -> str:
        if not self.truncated:
            return (bytes(self.head) + bytes(self.tail)).decode("utf-8", "replace")
        dropped = self.total - len(self.head) - len(self.tail)
        return (self.head.decode("utf-8", "replace") + f"\n...[{dropped} bytes dropped]...\n"
                + self.tail.decode("utf-8", "replace"))


def _make_workdir(uid: Optional[int]) -> str:
    """A fresh private directory, owned by the sandbox uid when there is one."""
    base = tempfile.gettempdir()
    if uid is not None and not _others_can_enter(base):
        base = "/tmp"
    work = tempfile.mkdtemp(prefix="strato-sandbox-", dir=base)
    if uid is not None:
        os.chown(work, uid, uid)
    os.chmod(work, 0o700)
    return work


def _rlimits(limits: SandboxLimits, plan: _Plan) -> list[tuple[int, int]]:
    """The (resource, soft limit) pairs the child applies; computed here so preexec_fn only calls setrlimit."""
    nproc = limits.max_processes
    if not plan.drop_privileges:  # RLIMIT_NPROC counts all processes of the (shared) caller uid
        nproc += _count_processes_of_uid(os.getuid())
    return [
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_CPU, int(limits.cpu_time_s)),
        (resource.RLIMIT_FSIZE, int(limits.max_file_bytes)),
        (resource.RLIMIT_NOFILE, int(limits.max_open_files)),
        (resource.RLIMIT_NPROC, int(nproc)),
        (resource.RLIMIT_AS, int(limits.memory_bytes)),
    ]


_ENV_KEEP = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


def _classify(returncode: Optional[int], timed_out: bool, stderr_tail: str) -> str:
    """Map exit status and stderr to a status; SIGXCPU (CPU limit) counts as a timeout."""
    if timed_out:
        return "timeout"
    if returncode == 0:
        return "passed"
    if returncode is None:
        return "error"
    if returncode < 0:
        return "timeout" if -returncode == signal.SIGXCPU else "killed"
    last = [ln for ln in stderr_tail.splitlines() if ln.strip()][-3:]
    if any(ln.startswith("MemoryError") or "Cannot allocate memory" in ln for ln in last):
        return "memory"
    return "failed"


def _run(source: str, limits: SandboxLimits, plan: _Plan) -> SandboxResult:
    """One sandboxed run under an explicit plan (the public entry points pass the probed one)."""
    start = time.monotonic()
    slot: Optional[_UidSlot] = None
    work: Optional[str] = None
    proc: Optional[subprocess.Popen[bytes]] = None
    try:
        slot = _UidSlot() if plan.drop_privileges else None
        uid = slot.uid if slot else None
        if uid is not None:
            _kill_uid(uid)  # leftovers of a crashed earlier caller holding the same slot
        work = _make_workdir(uid)
        with open(os.path.join(work, PROGRAM_FILE), "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(source)
        os.chmod(os.path.join(work, PROGRAM_FILE), 0o644)
        env = dict(_ENV_KEEP, HOME=work, TMPDIR=work)
        proc = subprocess.Popen(
            [plan.executable, "-I", "-S", "-B", "-c", _PRELUDE],
            cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            close_fds=True, start_new_session=True, umask=0o077,
            preexec_fn=_make_preexec(plan, uid, _rlimits(limits, plan)),
        )
        out, err, timed_out = _communicate(proc, uid, start + limits.timeout_s, limits.max_output_bytes)
        stderr = err.text()
        return SandboxResult(
            passed=not timed_out and proc.returncode == 0,
            status=_classify(proc.returncode, timed_out, stderr[-4096:]),
            returncode=proc.returncode, stdout=out.text(), stderr=stderr,
            duration_s=time.monotonic() - start, truncated=out.truncated or err.truncated,
        )
    except Exception as exc:  # never let a sample take the caller down
        return SandboxResult(False, "error", None, "", f"sandbox error: {type(exc).__name__}: {exc}",
                             time.monotonic() - start)
    finally:
        if proc is not None:
            if proc.poll() is None:
                _terminate(proc, slot.uid if slot else None)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        if slot is not None:
            _kill_uid(slot.uid)
            _remove_files_of_uid(slot.uid)
            slot.release()
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


def _terminate(proc: subprocess.Popen[bytes], uid: Optional[int]) -> None:
    """Kill the whole sandbox: namespace processes first (so the direct child reaps them), then the group."""
    if uid is not None:
        _kill_uid(uid, exclude=frozenset({proc.pid}))
        try:
            proc.wait(timeout=_REAP_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            pass
    if uid is not None:
        _kill_uid(uid)


def _communicate(proc: subprocess.Popen[bytes], uid: Optional[int], deadline: float,
                 cap: int) -> tuple[_CappedBuffer, _CappedBuffer, bool]:
    """Read stdout/stderr with a cap until the program ends or the deadline passes; kill on timeout."""
    assert proc.stdout is not None and proc.stderr is not None
    bufs = {proc.stdout.fileno(): _CappedBuffer(cap), proc.stderr.fileno(): _CappedBuffer(cap)}
    sel = selectors.DefaultSelector()
    for fd in bufs:
        os.set_blocking(fd, False)
        try:
            fcntl.fcntl(fd, _F_SETPIPE_SZ, 1 << 20)  # fewer wake-ups for chatty programs
        except OSError:
            pass
        sel.register(fd, selectors.EVENT_READ)
    timed_out = False
    drain_until: Optional[float] = None
    try:
        while sel.get_map():
            now = time.monotonic()
            if drain_until is None:
                if proc.poll() is not None:
                    # The program is over: whatever of it still runs (holding the pipes) goes too.
                    if uid is not None:
                        _kill_uid(uid)
                    else:
                        _killpg_quietly(proc.pid)
                    drain_until = now + _DRAIN_GRACE_S
                elif now >= deadline:
                    timed_out = True
                    _terminate(proc, uid)
                    drain_until = time.monotonic() + _DRAIN_GRACE_S
            elif now >= drain_until:
                break
            for key, _ in sel.select(0.05 if drain_until is None else max(0.0, drain_until - now)):
                try:
                    chunk = os.read(key.fd, 1 << 20)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(key.fd)
                else:
                    bufs[key.fd].feed(chunk)
    finally:
        sel.close()
    if proc.poll() is None:  # pipes closed early but the program still runs
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
            _terminate(proc, uid)
    return bufs[proc.stdout.fileno()], bufs[proc.stderr.fileno()], timed_out


def _killpg_quietly(pgid: int) -> None:
    """SIGKILL a process group that may already be gone."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# --------------------------------------------------------------------------------------------------------------
# Public API.


def run_program(source: str, limits: SandboxLimits = DEFAULT_LIMITS) -> SandboxResult:
    """Run one Python program in the sandbox; any misbehaviour becomes a failed result, never an exception."""
    try:
        plan = _plan()
    except Exception as exc:
        return SandboxResult(False, "error", None, "", f"sandbox error: {type(exc).__name__}: {exc}", 0.0)
    return _run(source, limits, plan)


def run_many(sources: Sequence[str], limits: SandboxLimits = DEFAULT_LIMITS,
             workers: int = 2) -> list[SandboxResult]:
    """Run programs in parallel (``workers`` at a time, each fully sandboxed); results keep input order."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if not sources:
        return []
    _plan()  # probe once before the threads start
    with ThreadPoolExecutor(max_workers=min(workers, len(sources)), thread_name_prefix="sandbox") as pool:
        return list(pool.map(lambda s: run_program(s, limits), sources))

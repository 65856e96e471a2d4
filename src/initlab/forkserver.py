"""Train a cell in a process forked from a warm one: the train stages' command.

    python -m initlab.forkserver --cell runs/configs/grid/tanh-xavier.yaml

does what `python -m initlab.train --cell ...` does, without paying the trainer's imports
(torch: ~2.5 s, more than a default cell trains) in every one of the study's processes. This
client imports nothing heavy. It connects to a fork server, a process that has imported
`initlab.train` once and forks a child per cell; the child takes the client's working
directory, environment and stdin/stdout/stderr (passed over the socket), trains the cell
exactly as a fresh process would (nothing runs in the server before the fork), and its exit
status becomes the client's. Python's multiprocessing "forkserver" works the same way inside
one program; this one outlives a process so that successive DVC stages can share it.

- The first client starts the server; it exits after IDLE_SECONDS without work.
- A server serves one version of the code only: it is found by a socket name made of the
  digest of the package's source (`initlab.digest.package_digest`), the interpreter and the
  environment (variables read at import, such as OMP_NUM_THREADS, must match), so an edit or
  another setting starts a new server; and it trains a cell only if the cell's `code` is the
  digest of the training code it loaded for that cell (`initlab.digest.cell_digest`).
- A signal to the client (Ctrl-C, DVC or a scheduler stopping the stage) is passed on to the
  child, which then cleans up as the trainer does; a client killed outright closes its end
  of the socket and the child stops on that (SIGTERM), so no orphan goes on training.
- Whenever no server can serve (none comes up, the code differs, the socket fails before a
  child starts), the client runs `python -m initlab.train` itself, in its own process.
- `INITLAB_FORKSERVER=0` turns it off: the client runs `python -m initlab.train` at once, the
  reading path without this mechanism (same numbers; each cell pays the imports).
"""

from __future__ import annotations

import hashlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

IDLE_SECONDS = 30.0
START_SECONDS = 60.0  # how long a client waits for the server it started
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Set by DVC or the shell per command; they do not change what the server imported.
PER_COMMAND_VARIABLES = {"DVC_STAGE", "DVC_ROOT", "PWD", "OLDPWD", "SHLVL", "_"}
MESSAGE_BYTES = 1 << 20


def socket_path(identity: str, env: dict[str, str]) -> Path | None:
    """Where the server for this source (`identity`), interpreter and environment listens: in a
    folder of this user's that no one else can enter (None if it is not: the client, which
    sends its environment and its stdout there, then keeps to its own process)."""
    key = json.dumps([sys.executable, identity, sorted(
        (k, v) for k, v in env.items() if k not in PER_COMMAND_VARIABLES)])
    folder = Path(env.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / f"initlab-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    owner = folder.lstat()
    if owner.st_uid != os.getuid() or owner.st_mode & 0o077 or folder.is_symlink():
        return None
    return folder / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.sock"


def _send(conn: socket.socket, **message) -> None:
    conn.send(json.dumps(message).encode())


def _receive(conn: socket.socket) -> dict | None:
    data = conn.recv(MESSAGE_BYTES)
    return json.loads(data) if data else None


# ---- the client -------------------------------------------------------------------------

def _connect(path: Path) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        raise
    return conn


def _connect_or_start(path: Path, identity: str) -> socket.socket | None:
    """A connection to the server at `path`, started if need be; None if none comes up."""
    try:
        return _connect(path)
    except OSError:
        pass
    log = path.with_suffix(".log").open("a")
    server = subprocess.Popen(
        [sys.executable, "-m", "initlab.forkserver", "--serve", str(path), identity,
         str(IDLE_SECONDS)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    log.close()
    deadline = time.monotonic() + START_SECONDS
    while server.poll() is None and time.monotonic() < deadline:
        try:
            return _connect(path)
        except OSError:
            time.sleep(0.02)
    return None


def run_cell(cell_config: Path) -> int | None:
    """Train the cell in a child of the fork server; its exit status, or None when no server
    could start the child (the cell's file unreadable included: the trainer reports that)."""
    import yaml

    from initlab.digest import package_digest

    try:
        code = yaml.safe_load(cell_config.read_text()).get("code")
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    identity = package_digest()
    path = socket_path(identity, dict(os.environ)) if isinstance(code, str) else None
    conn = _connect_or_start(path, identity) if path else None
    if conn is None:
        return None
    with conn:
        def forward(signum, frame):
            try:
                _send(conn, signal=signum)
            except OSError:  # the child has ended: its status is on its way
                pass

        # Installed first: a signal that comes before the child exists waits for it. One
        # this process ignores (SIGINT in a background job) is ignored, as by the trainer.
        for signum in FORWARDED_SIGNALS:
            if signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, forward)
        try:
            socket.send_fds(conn, [json.dumps({
                "argv": ["--cell", str(cell_config)], "cwd": os.getcwd(),
                "env": dict(os.environ)}).encode()], [0, 1, 2])
            message = _receive(conn)
        except OSError:
            message = None
        if message is None:  # the server went away before forking: nothing runs
            return None
        while message is not None and "status" not in message:  # {"pid": ...} first
            try:
                message = _receive(conn)
            except OSError:
                message = None
    if message is None:
        print(f"initlab: error: the training process for {cell_config} ended without an "
              "exit status", file=sys.stderr)
        return 1
    return message["status"]


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--serve"]:
        serve(Path(args[1]), args[2], float(args[3]))
        return
    switch = os.environ.get("INITLAB_FORKSERVER", "1")
    if switch not in ("0", "1"):
        print(f"initlab: error: INITLAB_FORKSERVER={switch!r} is not allowed: 1 (the default) "
              "trains cells in children of a warm server, 0 in their own process",
              file=sys.stderr)
        sys.exit(2)
    status = (run_cell(Path(args[1])) if switch == "1" and args[:1] == ["--cell"]
              and len(args) == 2 else None)
    if status is None:
        os.execv(sys.executable, [sys.executable, "-m", "initlab.train", *args])
    sys.exit(status)


# ---- the server -------------------------------------------------------------------------

def serve(path: Path, identity: str, idle_seconds: float) -> None:
    """Import the trainer, check that the package's source is still `identity`, then fork a
    child per request on the socket at `path` (for a cell composed for the training code it
    loaded) until `idle_seconds` pass with no child and no request."""
    import initlab.train  # noqa: F401  (what every child inherits)
    from initlab.digest import package_digest

    loaded = [m.__file__ for name, m in list(sys.modules.items()) if name.split(".")[0] ==
              "initlab" and name not in ("initlab.forkserver", "initlab.digest")]
    if package_digest() != identity:
        sys.exit(f"initlab.forkserver: the package's source is not {identity}; not serving")
    os.chdir("/")  # hold no project folder; each child works in its client's
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    bound = path.with_name(f".{path.name}.{os.getpid()}")
    listener.bind(str(bound))
    listener.listen()
    os.replace(bound, path)
    ours = path.stat().st_ino  # a server started in a race may have replaced it since
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    children: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, the client's socket)
    while True:
        events = selector.select(idle_seconds)
        if not events and not children:
            break
        for key, _ in events:
            if key.fileobj is listener:
                conn, _ = listener.accept()
                try:
                    data, fds, _, _ = socket.recv_fds(conn, MESSAGE_BYTES, 3)
                except OSError:
                    conn.close()
                    continue
                if not _composed_for(loaded, data):  # the client trains it itself
                    for fd in fds:
                        os.close(fd)
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    try:
                        listener.close()
                        for _, other in children.values():
                            other.close()
                        _child(conn, data, fds)
                    finally:
                        os._exit(1)  # never back into the server's loop
                for fd in fds:
                    os.close(fd)
                pidfd = os.pidfd_open(pid)
                children[pidfd] = (pid, conn)
                selector.register(pidfd, selectors.EVENT_READ)
                _send(conn, pid=pid)
            else:
                pid, conn = children.pop(key.fd)
                selector.unregister(key.fd)
                os.close(key.fd)
                status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
                if status < 0:  # killed by a signal: the child could not report it
                    try:
                        _send(conn, status=128 - status)
                    except OSError:
                        pass
                conn.close()
    if path.exists() and path.stat().st_ino == ours:
        path.unlink()
        path.with_suffix(".log").unlink(missing_ok=True)  # kept only when a server failed
    listener.close()


def _composed_for(loaded: list[str], request: bytes) -> bool:
    """Whether the requested cell's `code` is the digest of the training code this server
    loaded, for its activation and init (a cell composed from other code is not served)."""
    import yaml

    from initlab.digest import cell_digest

    argv, cwd = (json.loads(request)[key] for key in ("argv", "cwd"))
    try:
        cell = yaml.safe_load((Path(cwd) / argv[1]).read_text())
        activation, init, code = cell["activation"]["name"], cell["init"]["name"], cell["code"]
    except (OSError, yaml.YAMLError, KeyError, TypeError, IndexError):
        return True  # the trainer reports a bad cell file, as in a process of its own
    if cell_digest(loaded, activation, init) == code:
        return True
    print(f"initlab.forkserver: {argv[1]} was composed for other training code; not serving "
          "it", file=sys.stderr, flush=True)
    return False


def _child(conn: socket.socket, request: bytes, fds: list[int]) -> None:
    """In the forked child: become the client's process (fds, cwd, environment), run the
    trainer, report its exit status on `conn`, and exit."""
    for target, fd in zip((0, 1, 2), fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdout.reconfigure(line_buffering=sys.stdout.isatty())
    sys.stderr.reconfigure(line_buffering=True)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the server may ignore it
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    threading.Thread(target=_watch_client, args=(conn,), daemon=True).start()
    try:
        request = json.loads(request)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["initlab.train", *request["argv"]]
        sys.modules["initlab.train"].main()
        status = 0
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
        status = e.code if isinstance(e.code, int) else int(e.code is not None)
    except KeyboardInterrupt:
        status = 128 + signal.SIGINT
    except BaseException:
        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        _send(conn, status=status)
    finally:
        os._exit(status)


def _watch_client(conn: socket.socket) -> None:
    """Deliver the signals the client forwards; SIGTERM when the client is gone."""
    while True:
        try:
            message = _receive(conn)
        except OSError:
            message = None
        os.kill(os.getpid(), message["signal"] if message else signal.SIGTERM)
        if message is None:
            return


if __name__ == "__main__":
    main()

"""Run a stage's module in a process forked from a warm one: the pipeline's stage commands.

    python -m initlab.forkserver --cell runs/configs/grid/tanh-xavier.yaml
    python -m initlab.forkserver initlab.evaluate

do what `python -m initlab.train --cell ...` and `python -m initlab.evaluate` do, without
paying the stack's imports (torch, MLflow, matplotlib, scipy: 2-5 s a stage, more than a
default cell trains) in every one of the study's processes. This client imports nothing heavy.
It connects to a fork server, a process that imports each stage's module (`STAGES`) once and
forks a child per request; the child takes the client's working directory, environment
and stdin/stdout/stderr (passed over the socket), runs the module's `main()` exactly as a
fresh process would (the server only imports, it runs nothing), and its exit status becomes
the client's. Python's multiprocessing "forkserver" works the same way inside one program;
this one outlives a process so that successive DVC stages can share it.

- The first client starts the server; it imports the trainer, then serves. Once a stage of
  `dvc repro` has asked (DVC_STAGE set: evaluate and report will follow), it imports the other
  stages' modules and what they import at first use (MLflow) while it has no child and no
  request, so never beside a cell's training; for cells trained by hand, a stage's module at
  its first request only. It exits after IDLE_SECONDS without work (`INITLAB_FORKSERVER_IDLE`
  sets them). Five minutes: the next `dvc repro` of an edit loop (edit params.yaml, repro,
  read the report, edit again) finds it warm, its imports done; a repro after the server has
  gone pays them once more (docs/performance.md, "The edit loop with a warm server").
- A server serves one version of the code only: it is found by a socket name made of the
  digest of the package's source (`initlab.digest.package_digest`), the interpreter and the
  environment (variables read at import, such as OMP_NUM_THREADS, must match), so an edit or
  another setting starts a new server (one that finds the source changed stops serving); and
  it trains a cell only if the cell's `code` is the digest of the training code it loaded for
  that cell (`initlab.digest.cell_digest`).
- A signal to the client (Ctrl-C, DVC or a scheduler stopping the stage) is passed on to the
  child, which then cleans up as the module does; a client killed outright closes its end
  of the socket and the child stops on that (SIGTERM), so no orphan goes on working.
- Whenever no server can serve (none comes up, the code differs, the socket fails before a
  child starts), the client runs `python -m <module>` itself, in its own process.
- `INITLAB_FORKSERVER=0` turns it off: the client runs `python -m <module>` at once, the
  reading path without this mechanism (same outputs; each stage pays the imports).
"""

from __future__ import annotations

import hashlib
import importlib
import marshal
import math
import os
import selectors
import signal
import socket
import stat
import sys
import time

# A client starts per stage, so it imports only what it uses: the server's own modules
# (ctypes, subprocess, threading, traceback) are imported in the functions that use them,
# paths are strings (pathlib and json would import `re`), and the messages are `marshal`'s
# (client and server are one interpreter: the socket's name says which).

IDLE_SECONDS = 300.0
TRAINER = "initlab.train"  # imported first: the training code a cell's `code` is checked against
# What a cell imports at its first use rather than with the trainer (numpy's random streams,
# torch.load's helpers, the dataset sources the schema checks, tqdm's lock, omegaconf's
# resolver helpers): imported once here, after the training files are listed, rather than in
# every cell's child.
CELL_FIRST_USE = ("numpy.random", "torch.utils.serialization", "initlab.data.sources",
                  "multiprocessing.synchronize", "omegaconf._impl")
# The other stages' modules, each with what it imports at first use rather than with the
# module: MLflow (~2 s), which `initlab.tracking` keeps off the trainer's path.
MLFLOW = ("mlflow.tracking", "mlflow.store.tracking.sqlalchemy_store")
STAGES = {"initlab.data.download": (), "initlab.data.prepare": (), "initlab.compose": (),
          "initlab.evaluate": MLFLOW, "initlab.report": MLFLOW}
START_SECONDS = 60.0  # how long a client waits for the server it started
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Set per command by DVC, the shell or pytest; they do not change what the server imported.
PER_COMMAND_VARIABLES = {"DVC_STAGE", "DVC_ROOT", "PWD", "OLDPWD", "SHLVL", "_",
                         "PYTEST_CURRENT_TEST"}
MESSAGE_BYTES = 1 << 20
PR_SET_NAME = 15  # prctl(2): the name `ps -o comm` and /proc/<pid>/comm show


def socket_path(identity: str, env: dict[str, str]) -> str | None:
    """Where the server for this source (`identity`), interpreter and environment listens: in a
    folder of this user's that no one else can enter (None if it is not: the client, which
    sends its environment and its stdout there, then keeps to its own process)."""
    key = repr([sys.executable, identity, sorted(
        (k, v) for k, v in env.items() if k not in PER_COMMAND_VARIABLES)])
    runtime = env.get("XDG_RUNTIME_DIR")
    if not runtime:
        import tempfile

        runtime = tempfile.gettempdir()
    folder = os.path.join(runtime, f"initlab-{os.getuid()}")
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    owner = os.lstat(folder)  # a folder, not a link to one
    if owner.st_uid != os.getuid() or owner.st_mode & 0o077 or not stat.S_ISDIR(owner.st_mode):
        return None
    return os.path.join(folder, f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.sock")


def log_path(path: str) -> str:
    """Where the server at `path` writes what it prints (kept only when it fails)."""
    return os.path.splitext(path)[0] + ".log"


def _send(conn: socket.socket, **message) -> None:
    conn.send(marshal.dumps(message))


def _receive(conn: socket.socket) -> dict | None:
    data = conn.recv(MESSAGE_BYTES)
    return marshal.loads(data) if data else None


# ---- the client -------------------------------------------------------------------------

def _connect(path: str) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        conn.connect(path)
    except OSError:
        conn.close()
        raise
    return conn


def _connect_or_start(path: str, identity: str, idle_seconds: float) -> socket.socket | None:
    """A connection to the server at `path`, started if need be (to exit after
    `idle_seconds` without work); None if none comes up."""
    try:
        return _connect(path)
    except OSError:
        pass
    import subprocess

    log = open(log_path(path), "a")
    server = subprocess.Popen(
        [sys.executable, "-m", "initlab.forkserver", "--serve", path, identity,
         str(idle_seconds)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    log.close()
    deadline = time.monotonic() + START_SECONDS
    while server.poll() is None and time.monotonic() < deadline:
        try:
            return _connect(path)
        except OSError:
            time.sleep(0.02)
    return None


def run_module(module: str, args: list[str], idle_seconds: float) -> int | None:
    """Run `module` with `args` in a child of the fork server (one started here exits after
    `idle_seconds` without work); its exit status, or None when no server could start the
    child."""
    from initlab.digest import package_digest

    identity = package_digest()
    path = socket_path(identity, dict(os.environ))
    conn = _connect_or_start(path, identity, idle_seconds) if path else None
    if conn is None:
        return None
    with conn:
        def forward(signum, frame):
            try:
                _send(conn, signal=signum)
            except OSError:  # the child has ended: its status is on its way
                pass

        # Installed first: a signal that comes before the child exists waits for it. One
        # this process ignores (SIGINT in a background job) is ignored, as by the module.
        for signum in FORWARDED_SIGNALS:
            if signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, forward)
        try:
            socket.send_fds(conn, [marshal.dumps({
                "module": module, "argv": args, "cwd": os.getcwd(),
                "env": dict(os.environ)})], [0, 1, 2])
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
        print(f"initlab: error: the process of `{module} {' '.join(args)}` ended without an "
              "exit status", file=sys.stderr)
        return 1
    return message["status"]


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--serve"]:
        serve(args[1], args[2], float(args[3]))
        return
    module, args = (TRAINER, args) if args[:1] == ["--cell"] else (args[0] if args else "",
                                                                    args[1:])
    if module not in (TRAINER, *STAGES):
        print(f"initlab: error: initlab.forkserver {module!r} is not allowed: a stage's module, "
              f"one of {', '.join((TRAINER, *STAGES))}, or --cell FILE (for {TRAINER})",
              file=sys.stderr)
        sys.exit(2)
    switch = os.environ.get("INITLAB_FORKSERVER", "1")
    if switch not in ("0", "1"):
        print(f"initlab: error: INITLAB_FORKSERVER={switch!r} is not allowed: 1 (the default) "
              "runs stages in children of a warm server, 0 in their own process",
              file=sys.stderr)
        sys.exit(2)
    idle = os.environ.get("INITLAB_FORKSERVER_IDLE", str(IDLE_SECONDS))
    try:
        idle_seconds = float(idle)
    except ValueError:
        idle_seconds = math.nan
    if not 0 < idle_seconds < math.inf:
        print(f"initlab: error: INITLAB_FORKSERVER_IDLE={idle!r} is not allowed: the seconds a "
              f"fork server waits for work before it exits, a number > 0 (default "
              f"{IDLE_SECONDS:g})", file=sys.stderr)
        sys.exit(2)
    status = run_module(module, args, idle_seconds) if switch == "1" else None
    if status is None:
        os.execv(sys.executable, [sys.executable, "-m", module, *args])
    sys.exit(status)


# ---- the server -------------------------------------------------------------------------

def serve(path: str, identity: str, idle_seconds: float) -> None:
    """Import the trainer, check that the package's source is still `identity`, then fork a
    child per request on the socket at `path` (for a cell, one composed for the training code
    it loaded; for another stage, once its module is imported, which it does at the stage's
    first request or, once a DVC stage has asked, a name at a time while it has no child and
    no request) until `idle_seconds` pass with no child and no request."""
    started_with = dict(os.environ)
    importlib.import_module(TRAINER)  # what every child inherits
    # The training files, as `import initlab.train` loads them in a fresh interpreter (this
    # module runs as __main__, not as initlab.forkserver); the stages forked from here have
    # them in `initlab.digest`
    loaded = [m.__file__ for name, m in list(sys.modules.items())
              if name.split(".")[0] == "initlab"]
    from initlab import digest

    digest.SERVED_TRAINING_FILES = loaded
    for name in CELL_FIRST_USE:
        importlib.import_module(name)
    if digest.package_digest() != identity:
        sys.exit(f"initlab.forkserver: the package's source is not {identity}; not serving")
    os.chdir("/")  # hold no project folder; each child works in its client's
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    bound = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}")
    listener.bind(bound)
    listener.listen()
    os.replace(bound, path)
    ours = os.stat(path).st_ino  # a server started in a race may have replaced it since
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    children: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, the client's socket)
    served = {TRAINER}  # the modules imported from the source served
    to_import = [name for module, libraries in STAGES.items() for name in (module, *libraries)]
    pipeline = False  # whether a stage of `dvc repro` has asked: then the others follow

    def imported(*names: str) -> bool:
        """Whether `names` import (if not, the client's own process reports why) from the
        source served; one no longer `identity` stops all serving."""
        try:
            for name in names:  # a stage as `python -m` runs it (a package's __main__)
                if name in STAGES:
                    _entry(name)
                else:
                    importlib.import_module(name)
        except Exception:
            return False
        if digest.package_digest() != identity:
            print(f"initlab.forkserver: the package's source is no longer {identity} (edited "
                  "since this server started); not serving", file=sys.stderr, flush=True)
            served.clear()
            to_import.clear()
            return False
        return True

    while True:
        idle = pipeline and to_import and not children  # then import a name: no cell trains
        events = selector.select(0 if idle else idle_seconds)
        if not events and idle:
            imported(to_import.pop(0))
            continue
        if not events and not children:
            break
        for key, _ in events:
            if key.fileobj is listener:
                conn, _ = listener.accept()
                try:
                    data, fds, _, _ = socket.recv_fds(conn, MESSAGE_BYTES, 3)
                    request = marshal.loads(data)
                except (OSError, ValueError, EOFError, TypeError):
                    conn.close()
                    continue
                module = request.get("module")
                pipeline = pipeline or "DVC_STAGE" in request.get("env", {})
                if module in STAGES and module not in served and imported(module,
                                                                         *STAGES[module]):
                    served.add(module)
                if module not in served or (module == TRAINER and
                                            not _composed_for(loaded, request)):
                    for fd in fds:  # the client runs it itself
                        os.close(fd)
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    try:
                        listener.close()
                        for _, other in children.values():
                            other.close()
                        _child(conn, request, fds, {
                            k: v for k, v in os.environ.items() if k not in started_with})
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
    if os.path.exists(path) and os.stat(path).st_ino == ours:
        os.unlink(path)
        try:
            os.unlink(log_path(path))  # kept only when a server failed
        except FileNotFoundError:
            pass
    listener.close()


def _entry(module: str):
    """The module whose `main()` `python -m module` runs (a package's `__main__`)."""
    found = importlib.import_module(module)
    return importlib.import_module(f"{module}.__main__") if hasattr(found, "__path__") else found


def _composed_for(loaded: list[str], request: dict) -> bool:
    """Whether the requested cell's `code` is the digest of the training code this server
    loaded, for its activation and init (a cell composed from other code is not served)."""
    import yaml

    from initlab.digest import cell_digest

    argv, cwd = request["argv"], request["cwd"]
    try:
        with open(os.path.join(cwd, argv[1])) as f:
            cell = yaml.load(f, yaml.CSafeLoader)  # libyaml's: it runs once a cell
        activation, init, code = cell["activation"]["name"], cell["init"]["name"], cell["code"]
    except (OSError, yaml.YAMLError, KeyError, TypeError, IndexError):
        return True  # the trainer reports a bad cell file, as in a process of its own
    if cell_digest(loaded, activation, init) == code:
        return True
    print(f"initlab.forkserver: {argv[1]} was composed for other training code; not serving "
          "it", file=sys.stderr, flush=True)
    return False


def _child(conn: socket.socket, request: dict, fds: list[int], defaults: dict) -> None:
    """In the forked child: become the client's process (fds, cwd, environment, with the
    `defaults` that the server's imports set), run the module's `main()`, report its exit
    status on `conn`, and exit."""
    import ctypes
    import threading
    import traceback

    for target, fd in zip((0, 1, 2), fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdout.reconfigure(line_buffering=sys.stdout.isatty())
    sys.stderr.reconfigure(line_buffering=True)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the server may ignore it
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    # Named after its stage (train, evaluate, ...): it carries the server's command line.
    ctypes.CDLL(None).prctl(PR_SET_NAME, request["module"].rsplit(".", 1)[-1].encode(), 0, 0, 0)
    threading.Thread(target=_watch_client, args=(conn,), daemon=True).start()
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update({**defaults, **request["env"]})
        sys.argv = [request["module"], *request["argv"]]
        _entry(request["module"]).main()
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

"""A team's record: an MLflow tracking server on PostgreSQL, started on this machine.

    python -m initlab.server [--data .server] [--host 127.0.0.1] [--port 5000] [--db-port 5432]

Creates once, in <data>/, a PostgreSQL cluster (`initdb`, a role and database `mlflow`, a
random password in <data>/password, readable by its owner only) and then starts it, listening
on 127.0.0.1 only, and `mlflow server` on it: runs in the database, artifacts in
<data>/artifacts, served through the server. It prints the MLFLOW_TRACKING_URI to export, so
that `evaluate` and `report` log there, and stops both on Ctrl-C or SIGTERM; started again on
the same folder, it serves the same record. The server binds 127.0.0.1 unless `--host` says
otherwise; it has no authentication of its own (docs/mlflow.md says how to put it behind
one). The database password reaches the server by its environment, never a command line.
As root, PostgreSQL runs as the `postgres` user (it refuses root).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from initlab.errors import ConfigError, reported_errors
from initlab.paths import workspace_root

START_SECONDS = 120.0  # `mlflow server` answers /health after ~10 s here


def postgres_bin(program: str) -> str:
    """A PostgreSQL program: on PATH, or Debian's newest /usr/lib/postgresql/<v>/bin."""
    found = shutil.which(program) or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{program}"),
                                key=lambda p: int(p.parts[-3]), reverse=True)), None)
    if found is None:
        raise ConfigError(f"PostgreSQL's {program} not found on PATH or in "
                          "/usr/lib/postgresql/*/bin: install postgresql (Debian: "
                          "apt-get install postgresql)")
    return found


def as_owner(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the `postgres` user."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def init_cluster(data: Path) -> None:
    """A cluster in data/postgres with the role `mlflow` (its password in data/password)."""
    cluster = data / "postgres"
    if (cluster / "PG_VERSION").is_file():
        return
    data.mkdir(parents=True, exist_ok=True)
    password = data / "password"
    password.write_text(secrets.token_urlsafe(24))
    password.chmod(0o600)
    cluster.mkdir(mode=0o700)
    pwfile = data / ".pwfile"
    shutil.copy(password, pwfile)
    if os.geteuid() == 0:
        shutil.chown(cluster, "postgres")
        shutil.chown(pwfile, "postgres")
    try:
        subprocess.run(as_owner([postgres_bin("initdb"), "-D", str(cluster), "-U", "mlflow",
                                 "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8"]),
                       check=True, capture_output=True, text=True)
    finally:
        pwfile.unlink()


def start_postgres(data: Path, port: int) -> None:
    cluster = data / "postgres"
    options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={cluster}"
    started = subprocess.run(as_owner([postgres_bin("pg_ctl"), "-D", str(cluster), "-o",
                                       options, "-l", str(cluster / "server.log"), "-w",
                                       "start"]), capture_output=True, text=True)
    if started.returncode:
        raise ConfigError(f"PostgreSQL in {cluster} did not start on 127.0.0.1:{port}: "
                          f"{started.stdout.strip()} {started.stderr.strip()} (its log: "
                          f"{cluster / 'server.log'})")


def stop_postgres(data: Path) -> None:
    subprocess.run(as_owner([postgres_bin("pg_ctl"), "-D", str(data / "postgres"), "-m", "fast",
                             "-w", "stop"]), capture_output=True)


def ensure_database(port: int, env: dict[str, str]) -> None:
    """The database `mlflow`, created on first use."""
    listed = subprocess.run([postgres_bin("psql"), "-h", "127.0.0.1", "-p", str(port), "-U",
                             "mlflow", "-d", "postgres", "-tAc",
                             "SELECT 1 FROM pg_database WHERE datname = 'mlflow'"],
                            env=env, check=True, capture_output=True, text=True).stdout
    if listed.strip() != "1":
        subprocess.run([postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U",
                        "mlflow", "mlflow"], env=env, check=True, capture_output=True)


def wait_healthy(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise ConfigError(f"mlflow server exited with {server.returncode}; its log: {log}")
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2).close()
            return
        except OSError:
            time.sleep(0.5)
    raise ConfigError(f"mlflow server did not answer {url}/health in {START_SECONDS:.0f} s; "
                      f"its log: {log}")


def serve(data: Path, host: str, port: int, db_port: int) -> None:
    """Start PostgreSQL and the tracking server, print the URI, stop both on a signal."""
    init_cluster(data)
    env = {**os.environ, "PGPASSWORD": (data / "password").read_text().strip()}
    start_postgres(data, db_port)
    server = None
    try:
        ensure_database(db_port, env)
        log = data / "mlflow-server.log"
        url = f"http://{host}:{port}"
        with log.open("a") as out:
            server = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                 f"postgresql+psycopg2://mlflow@127.0.0.1:{db_port}/mlflow",
                 "--artifacts-destination", str(data / "artifacts"), "--host", host,
                 "--port", str(port), "--workers", "2"],
                env={**env, "MLFLOW_DISABLE_TELEMETRY": "true"}, stdout=out, stderr=out,
                start_new_session=True)
        wait_healthy(url, server, log)
        print(f"MLflow tracking server on PostgreSQL: export MLFLOW_TRACKING_URI={url}",
              flush=True)
        server.wait()
        raise ConfigError(f"mlflow server exited with {server.returncode}; its log: {log}")
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        stop_postgres(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="the server's folder (default: .server in the project)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="the address the tracking server binds (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--db-port", type=int, default=5432)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stops as Ctrl-C does
    with reported_errors():
        try:
            serve((args.data or workspace_root() / ".server").resolve(), args.host, args.port,
                  args.db_port)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()

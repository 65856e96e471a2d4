"""Speed only: `evaluate` logs its runs to MLflow in worker processes forked as the stage
starts, while it goes on measuring (importing MLflow and opening the store cost ~2.5 s a
process). The one switch: INITLAB_LOGGING_WORKERS=0 logs everything in the stage's own
process, the reading path without this mechanism (`initlab.evaluate.log_cells` either way).
Linux only (fork, prctl)."""

from __future__ import annotations

import ctypes
import itertools
import multiprocessing
import multiprocessing.connection
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from initlab import tracking
from initlab.errors import ConfigError
from initlab.io import sigterm_as_exit

PR_SET_PDEATHSIG = 1  # prctl(2)
SERVER_LOST = 3  # a worker's exit status when the tracking server stopped answering


def _logging_worker(parent_pid: int, study: str, tasks, log_cells) -> None:
    """`log_cells` of what `tasks` (a queue) hands out until it hands out None, in a worker
    that ends with the evaluate that started it (SIGTERM when its parent dies: Linux
    PR_SET_PDEATHSIG); SIGINT is left to the parent; a SIGTERM ends the run being logged
    KILLED. It imports MLflow and opens the store while the parent measures (matplotlib it
    has from the parent); the parent creates the study's experiment and parent run before it
    hands out a cell."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, sigterm_as_exit)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before prctl
        raise SystemExit(128 + signal.SIGTERM)
    try:
        mlflow_client = tracking.client()
        cells = iter(tasks.get, None)
        first = next(cells, None)
        if first is not None:
            exp_id = tracking.experiment_id(mlflow_client, study)
            log_cells(mlflow_client, study, exp_id,
                      tracking.study_run(mlflow_client, exp_id, study),
                      itertools.chain([first], cells))
    except Exception:
        if tracking.lost(tracking.tracking_uri()):
            raise SystemExit(SERVER_LOST) from None  # the parent reports it, once
        raise


def worker_count(cells: int) -> int:
    """INITLAB_LOGGING_WORKERS=N: N logging workers (0: log in the evaluate process); unset,
    one per core (at most 4: the sqlite store takes one writer at a time) for a study of 20
    cells or more, about where starting them (each imports MLflow and opens the store,
    ~2.5 s) pays off, else none."""
    workers = os.environ.get("INITLAB_LOGGING_WORKERS", "")
    if not workers:
        return min(4, len(os.sched_getaffinity(0))) if cells >= 20 else 0
    if not workers.isdigit():
        raise ConfigError(f"INITLAB_LOGGING_WORKERS={workers!r} is not allowed: a number of "
                          "worker processes, 0 to log in the evaluate process itself")
    return int(workers)


@contextmanager
def logging_workers(study: str, count: int, log_cells):
    """Yield `log_runs(mlflow_client, exp_id, parent_id, cells)`: `log_cells` of what the
    iterator `cells` yields, by `count` worker processes (here, with `mlflow_client`, if 0)
    while `cells` goes on measuring. The
    workers are forked at once, so that their start overlaps this process's: torch is
    imported but has run no op, and no MLflow store is open yet. A
    failed or killed worker, or an interrupt, terminates the others (their current run ends
    KILLED) and raises."""
    context = multiprocessing.get_context("fork")
    tasks = context.Queue()
    workers = [context.Process(target=_logging_worker, name=f"initlab-logging-{i}",
                               args=(os.getpid(), study, tasks, log_cells))
               for i in range(count)]
    for worker in workers:
        worker.start()

    def log_runs(mlflow_client, exp_id: str, parent_id: str, cells: Iterator[tuple]) -> None:
        if not workers:
            return log_cells(mlflow_client, study, exp_id, parent_id, cells)
        for cell in cells:
            tasks.put(cell)
        for _ in workers:
            tasks.put(None)
        running = {worker.sentinel: worker for worker in workers}
        while running:  # in the order they end, so that a failure stops the others at once
            for ended in multiprocessing.connection.wait(list(running)):
                worker = running.pop(ended)
                worker.join()
                if worker.exitcode:
                    raise RuntimeError(f"{worker.name} exited with status {worker.exitcode}")

    try:
        yield log_runs
    finally:
        tasks.cancel_join_thread()  # never wait on a queue that nobody reads
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
                worker.join()

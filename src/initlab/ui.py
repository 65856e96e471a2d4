"""`make ui`: the MLflow UI over the project's store, on 127.0.0.1 unless asked otherwise.

    python -m initlab.ui [--host 127.0.0.1] [--port 5000]

Prints the URL of the study's runs table (in MLflow 3's "Model training" view).
"""

from __future__ import annotations

import argparse
import os
import sys

from initlab.config import load_config
from initlab.errors import reported_errors
from initlab.paths import tracking_root
from initlab.tracking import EXPERIMENT_PREFIX, client, tracking_uri


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind; 0.0.0.0 exposes the UI to the network")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    with reported_errors():
        study = load_config([]).study.name
    uri = tracking_uri()
    url = f"http://{args.host}:{args.port}"
    experiment = client().get_experiment_by_name(EXPERIMENT_PREFIX + study)
    if experiment is not None:
        url += f"/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning"
    print(f"MLflow UI for {uri}\nOpen {url} (Ctrl-C to stop)", flush=True)
    os.execv(sys.executable, [sys.executable, "-m", "mlflow", "server",
                              "--backend-store-uri", uri,
                              "--default-artifact-root", (tracking_root() / "mlartifacts").as_uri(),
                              "--host", args.host, "--port", str(args.port)])


if __name__ == "__main__":
    main()

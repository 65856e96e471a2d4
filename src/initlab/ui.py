"""`make ui`: the MLflow UI over the project's store, on 127.0.0.1 unless asked otherwise.

    python -m initlab.ui [--host 127.0.0.1] [--port 5000]
"""

from __future__ import annotations

import argparse
import os

from initlab.config import tracking_root
from initlab.tracking import tracking_uri


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind; 0.0.0.0 exposes the UI to the network")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    uri = tracking_uri()
    print(f"MLflow UI for {uri}\nOpen http://{args.host}:{args.port} (Ctrl-C to stop)",
          flush=True)
    os.execvp("mlflow", ["mlflow", "server", "--backend-store-uri", uri,
                         "--default-artifact-root", (tracking_root() / "mlartifacts").as_uri(),
                         "--host", args.host, "--port", str(args.port)])


if __name__ == "__main__":
    main()

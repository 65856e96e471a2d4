"""params.yaml -> a composed config: Hydra composes conf/config.yaml on the typed schema
(`initlab.schema`) with params.yaml's values as overrides, then the command line's, and the
result is validated. So the pipeline and a hand-run cell compose the same config from the
same file."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import yaml
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from initlab.errors import ConfigError
from initlab.paths import workspace_root
from initlab.schema import SECTIONS, Config, validate

PARAMS_FILE = "params.yaml"
GROUPS = ("dataset", "model", "activation", "init", "optimizer")  # chosen by `<group>.name`


def params_overrides(params: dict) -> list[str]:
    """Turn params.yaml into Hydra overrides: `<group>.name` selects the group's YAML in conf/,
    every other leaf overrides its key. So the pipeline and a hand-run cell compose the same
    config from the same file."""
    overrides = []
    for section, value in params.items():
        if section in GROUPS and isinstance(value, dict) and "name" in value:
            overrides.append(f"{section}={value['name']}")
            value = {k: v for k, v in value.items() if k != "name"}
        overrides += _leaf_overrides(section, value)
    return overrides


def _leaf_overrides(key: str, value) -> list[str]:
    if isinstance(value, dict):
        return [o for k, v in value.items() for o in _leaf_overrides(f"{key}.{k}", v)]
    return [f"{key}={json.dumps(value)}"]


def read_params(root: Path) -> dict:
    path = root / PARAMS_FILE
    try:
        params = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (it holds the study to run)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: malformed YAML{where}: "
                          f"{getattr(e, 'problem', None) or e}") from None
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(params).__name__}")
    _check_keys(path, params, Config, "")
    return params


def _check_keys(path: Path, values: dict, schema, prefix: str) -> None:
    """Every key of params.yaml must exist in the schema (a misspelt key would be ignored)."""
    allowed = {f.name: f.type for f in fields(schema)}
    for key, value in values.items():
        if key not in allowed:
            where = f"in {prefix.rstrip('.')!r}" if prefix else "sections"
            raise ConfigError(f"{path}: unknown key '{prefix}{key}'; allowed {where}: "
                              f"{sorted(allowed)}")
        nested = SECTIONS.get(str(allowed[key]).split(" ")[0])  # "LsuvConfig | None"
        if nested and isinstance(value, dict):
            _check_keys(path, value, nested, f"{prefix}{key}.")


def load_config(cli_overrides: list[str]) -> DictConfig:
    """Compose conf/config.yaml with params.yaml's values, then the command line's overrides
    (last wins), and validate the result."""
    from hydra import compose, initialize_config_dir

    root = workspace_root()
    overrides = params_overrides(read_params(root)) + list(cli_overrides)
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as e:
        reasons = [str(e)] + ([str(e.__cause__)] if e.__cause__ else [])
        message = "; ".join(line.strip() for r in reasons for line in r.splitlines()
                            if line.strip())
        raise ConfigError(f"{root / PARAMS_FILE} or command line: {message}") from None
    validate(cfg)
    return cfg

"""Command configs: ``--config FILE.yaml`` for every command, and the resolved configs runs write.

A config file is a YAML mapping whose keys are the command's flags (``loss-mask`` or
``loss_mask``); flags given on the command line override it. The ``config.yaml`` a run writes has
the same flat keys (so ``attriblm <cmd> --config RUN/config.yaml`` repeats the run) plus one key,
``resolved``, holding what the library resolved (settings, model identity, data sizes); that key
is ignored when the file is read back as a config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from attriblm.errors import ConfigError

RESOLVED_KEY = "resolved"
# Options that never go into a written config: the config itself, terminal behaviour, and
# --overwrite (repeating a run with --config must not silently replace it).
NOT_RECORDED = frozenset({"config", "quiet", "overwrite"})


def read_command_config(path: Path | str, allowed: set[str]) -> dict[str, Any]:
    """Read ``path`` as option defaults for a command whose options are ``allowed``.

    Returns ``{option_name: value}`` with ``-`` in keys turned into ``_``. ConfigError (naming the
    file and key) for a missing or non-YAML file, a non-mapping, or a key that is not an option.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found (--config)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read config file (--config): {error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} not valid YAML (--config)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of option: value (--config)")
    options = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name == RESOLVED_KEY:
            continue
        if name not in allowed:
            choices = ", ".join(sorted(n.replace("_", "-") for n in allowed))
            raise ConfigError(f"{path}: unknown option {key!r} for this command; known: {choices}")
        options[name] = value
    return options


def recorded_options(params: dict[str, Any]) -> dict[str, Any]:
    """A command's resolved option values in YAML-friendly form (paths as strings)."""
    out = {}
    for name, value in params.items():
        if name in NOT_RECORDED:
            continue
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = [str(v) if isinstance(v, Path) else v for v in value]
        out[name] = value
    return out

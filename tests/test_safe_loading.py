"""Safe loading (issue 8): a static scan of ``src/attriblm`` for loaders that can run code.

Rules: no pickle (or pickle-based libraries); every ``torch.load`` passes ``weights_only=True``;
``yaml.load`` only with a safe loader; no ``allow_pickle=True``; no ``eval`` / ``exec``;
``trust_remote_code`` is never a literal ``True`` (it may only be passed through from the
caller, and defaults to ``False``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "attriblm"
FILES = sorted(SRC.rglob("*.py"))
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal"}


def _parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.name}:{node.lineno}"


def _dotted(node: ast.AST) -> str:
    """``torch.load`` for ``torch.load``; '' for anything that is not a plain dotted name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else ""
    return ""


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def violations(path: Path) -> list[str]:
    """Every rule broken in one source file, as ``file:line: what``."""
    tree = _parsed(path)
    text = path.read_text(encoding="utf-8")
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names]
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                if name.split(".")[0] in PICKLE_MODULES:
                    found.append(f"{_where(path, node)}: imports {name}")
        elif isinstance(node, ast.Call):
            func = _dotted(node.func)
            if func.split(".")[0] in PICKLE_MODULES:
                found.append(f"{_where(path, node)}: calls {func}")
            if func in ("eval", "exec"):
                found.append(f"{_where(path, node)}: calls {func}")
            is_torch_load = func.endswith("torch.load") or (
                func == "load" and "from torch import load" in text
            )
            if is_torch_load and not _is_true(_keyword(node, "weights_only")):
                found.append(f"{_where(path, node)}: torch.load without weights_only=True")
            if func in ("yaml.load", "yaml.load_all"):
                loader = _keyword(node, "Loader")
                loader_src = "" if loader is None else ast.get_source_segment(text, loader) or ""
                if "Safe" not in loader_src and not _safe_loader_variable(tree, loader_src, text):
                    found.append(f"{_where(path, node)}: yaml.load without a SafeLoader")
            if func in ("yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all"):
                found.append(f"{_where(path, node)}: calls {func}")
            if _is_true(_keyword(node, "allow_pickle")):
                found.append(f"{_where(path, node)}: allow_pickle=True")
            if _is_true(_keyword(node, "trust_remote_code")):
                found.append(f"{_where(path, node)}: trust_remote_code=True")
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                is_flag = isinstance(key, ast.Constant) and key.value == "trust_remote_code"
                if is_flag and _is_true(value):
                    found.append(f"{_where(path, node)}: trust_remote_code: True")
        elif isinstance(node, ast.FunctionDef):
            args = node.args
            positional = args.posonlyargs + args.args
            with_default = positional[len(positional) - len(args.defaults) :]
            pairs = list(zip(with_default, args.defaults, strict=True))
            pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d]
            for arg, default in pairs:
                if arg.arg == "trust_remote_code" and not (
                    isinstance(default, ast.Constant) and default.value is False
                ):
                    found.append(f"{_where(path, node)}: trust_remote_code must default to False")
    return found


def _safe_loader_variable(tree: ast.Module, name: str, text: str) -> bool:
    """``Loader=loader`` where ``loader`` is only ever assigned something naming a SafeLoader."""
    values = [
        ast.get_source_segment(text, node.value) or ""
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
    ]
    return bool(values) and all("SafeLoader" in v and "Unsafe" not in v for v in values)


def test_the_scan_sees_the_package():
    assert len(FILES) > 20 and SRC / "models" / "loading.py" in FILES


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_unsafe_loading(path):
    assert violations(path) == []


def test_the_scan_catches_each_rule(tmp_path):
    """The rules fire on a file that breaks each of them (so an empty result means something)."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle\n"
        "import torch, yaml, numpy as np\n"
        "from transformers import AutoModel\n"
        "def f(path, trust_remote_code=True):\n"
        "    torch.load(path)\n"
        "    torch.load(path, weights_only=False)\n"
        "    yaml.load(open(path), Loader=yaml.Loader)\n"
        "    np.load(path, allow_pickle=True)\n"
        "    pickle.loads(b'')\n"
        "    eval('1')\n"
        "    AutoModel.from_pretrained(path, trust_remote_code=True)\n"
        "    return {'trust_remote_code': True}\n",
        encoding="utf-8",
    )
    found = violations(bad)
    kinds = [line.split(": ", 1)[1] for line in found]
    assert kinds.count("torch.load without weights_only=True") == 2
    for expected in (
        "imports pickle",
        "calls pickle.loads",
        "calls eval",
        "yaml.load without a SafeLoader",
        "allow_pickle=True",
        "trust_remote_code=True",
        "trust_remote_code: True",
        "trust_remote_code must default to False",
    ):
        assert expected in kinds, (expected, found)


def test_loaders_pass_trust_remote_code_through_and_default_to_false():
    """``load_model`` forwards its flag to transformers (never forces it on)."""
    import inspect

    from attriblm.models import loading

    assert inspect.signature(loading.load_model).parameters["trust_remote_code"].default is False
    source = inspect.getsource(loading._load_local)
    assert '"trust_remote_code": trust_remote_code' in source


def test_pickled_weights_need_an_explicit_flag():
    """Pickled weights load only with ``allow_pickle=True`` / ``--allow-pickle``: the API's
    default defers to the flag, and the flag is off unless given."""
    import inspect

    from attriblm.cli import app
    from attriblm.models import loading

    assert inspect.signature(loading.load_model).parameters["allow_pickle"].default is None
    assert loading._ALLOW_PICKLE is False
    options = inspect.signature(app.registered_callback.callback).parameters
    assert options["allow_pickle"].default is False
    source = inspect.getsource(loading._load_local)
    assert "use_safetensors=None if allow_pickle else True" in source

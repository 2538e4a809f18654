"""The layers stay apart: every import in the source tree, function-local ones included, goes only
to a layer that ARCHITECTURE.md allows. Read statically, so a lazy import cannot hide."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ("blocks", "graphcore", "app")

# layer -> the project packages its modules may import (third-party imports are not limited here,
# except the UI toolkit, which only the app may use).
ALLOWED: dict[str, tuple[str, ...]] = {
    "blocks": ("blocks",),
    "graphcore.core": ("blocks", "graphcore.core"),
    "graphcore.interchange": ("blocks", "graphcore.core", "graphcore.interchange"),
    "graphcore.runtime": ("blocks", "graphcore.core", "graphcore.runtime"),
    "graphcore.editing": ("blocks", "graphcore.core", "graphcore.editing"),
    "graphcore.cli": ("blocks", "graphcore"),
    # the API facade (of the runtime: the agent of a trained game run)
    "graphcore": ("blocks", "graphcore.core", "graphcore.interchange", "graphcore.editing", "graphcore.runtime"),
    "app": ("blocks", "graphcore", "app"),
}
UI_TOOLKITS = ("nicegui", "starlette", "fastapi", "webview")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str:
    """The longest ALLOWED key that is ``module`` or a package above it."""
    return max((key for key in ALLOWED if module == key or module.startswith(key + ".")), key=len)


def imports_of(source: str, package: str) -> list[tuple[int, str]]:
    """(line, absolute module) for every import statement in ``source``, at any depth."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve it against the module's package
                parts = package.split(".")
                anchor = parts[: len(parts) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base))
    return found


def layer_problems(source: str, module: str, is_package: bool = False) -> list[str]:
    """The imports of ``module`` that its layer does not allow."""
    layer = layer_of(module)
    allowed = ALLOWED[layer]
    package = module if is_package else module.rpartition(".")[0]
    wrong = []
    for line, target in imports_of(source, package):
        top = target.split(".")[0]
        if top in UI_TOOLKITS and layer != "app":
            wrong.append(f"line {line}: {target} (only app/ may use the UI toolkit)")
        elif target == "graphcore" and layer != "app":
            wrong.append(f"line {line}: the graphcore facade (import the module itself)")
        elif top in PROJECT and target != "graphcore" and not any(
                target == a or target.startswith(a + ".") for a in allowed):
            wrong.append(f"line {line}: {target} ({layer} may import only {', '.join(allowed)})")
    return wrong


SOURCES = sorted(p for top in PROJECT for p in (ROOT / top).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_stay_inside_the_allowed_layers(path: Path):
    problems = layer_problems(path.read_text(), module_name(path), path.name == "__init__.py")
    assert not problems, f"{path.relative_to(ROOT)}: " + "; ".join(problems)


def test_the_core_layer_is_covered():
    core = [p for p in SOURCES if layer_of(module_name(p)) == "graphcore.core"]
    assert {p.stem for p in core} >= {"document", "analysis", "compiler", "summary", "subgraphs"}


@pytest.mark.parametrize("source, module, expected", [
    ("def f():\n    from graphcore.runtime import train\n", "graphcore.core.analysis", "graphcore.runtime"),
    ("from ..editing import session\n", "graphcore.core.analysis", "graphcore.editing"),
    ("import nicegui\n", "graphcore.runtime.jobs", "nicegui"),
    ("from app.main import run\n", "graphcore.cli.main", "app.main"),
    ("import graphcore as gc\n", "graphcore.interchange.codegen", "facade"),
])
def test_the_check_finds_a_forbidden_import(source: str, module: str, expected: str):
    problems = layer_problems(source, module)
    assert len(problems) == 1 and expected in problems[0], problems


def test_the_check_allows_the_layers_below():
    source = "from graphcore.core.document import GraphDoc\nfrom blocks import get\nimport torch\n"
    assert layer_problems(source, "graphcore.runtime.train") == []


def test_make_help_lists_the_targets_the_readme_and_architecture_name():
    done = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    listed = {line.split()[1] for line in done.stdout.splitlines() if line.strip().startswith("make ")}
    assert {"test", "test-fast", "run", "lint", "bundle", "bench"} <= listed, done.stdout

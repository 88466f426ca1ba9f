"""Check the import layering of ``src/pixdiff`` (DESIGN.md, "Layers"): every import goes down
the layers, no two modules import each other (directly or round a loop), no file is too long.

Each module is parsed with ``ast``, never imported. Imports inside functions count as much as
imports at the top of a module: deferring an import hides a dependency, it does not remove it.

Run ``python tests/lint/layering.py`` (``make lint`` does): it prints one line per problem and exits
with status 1 if there is any. ``tests/lint/test_layering.py`` runs the same check under pytest.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = "pixdiff"
MAX_LINES = 400

# The layers, lowest first; a module may import its own layer and any layer listed before it.
# A name stands for that module and, if it is a package other than pixdiff itself, everything
# inside it. A new module must be placed here (the check names any module it cannot place).
LAYERS: dict[str, tuple[str, ...]] = {
    "core": (
        "pixdiff.schedules", "pixdiff.timesteps", "pixdiff.prediction", "pixdiff.denoiser",
        "pixdiff.conditioning", "pixdiff.files", "pixdiff.posterior", "pixdiff.vlb",
        "pixdiff.toy", "pixdiff.discrete_schedules", "pixdiff.schedule_registry",
        "pixdiff.shifted_schedules", "pixdiff.precision",
    ),
    "nets": ("pixdiff.nets",),
    "samplers": (
        "pixdiff.samplers", "pixdiff.guidance", "pixdiff.sampling", "pixdiff.low_res",
        "pixdiff.self_conditioning", "pixdiff.autoguidance", "pixdiff.multimodal_guidance",
    ),
    "data": ("pixdiff.data", "pixdiff.images"),
    "store": (
        "pixdiff.checkpoint", "pixdiff.config", "pixdiff.config_fields", "pixdiff.rundir",
        "pixdiff.train_state",
        "pixdiff.shipped", "pixdiff.classifier_store", "pixdiff.interop", "pixdiff.tuned_grids",
        "pixdiff.formats", "pixdiff.adapters", "pixdiff.loras",
    ),
    "pipelines": ("pixdiff.pipelines",),
    "eval": ("pixdiff.eval",),
    "training": ("pixdiff.training",),
    "app": ("pixdiff.serve", "pixdiff.cli", "pixdiff"),
}  # fmt: skip


class Import(NamedTuple):
    """One import of a pixdiff module: who imports what, and where."""

    importer: str
    imported: str
    path: Path
    line: int

    def where(self) -> str:
        return f"{shown(self.path)}:{self.line}"


def shown(path: Path) -> Path:
    """``path`` relative to the repository when it lies inside it."""
    return path.relative_to(SRC.parent) if path.is_relative_to(SRC.parent) else path


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module under the package folder ``root``."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        names[name] = path
    return names


def _resolve(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The absolute module an ``import from`` names (``from ..x import y`` -> ``a.x``)."""
    if not node.level:
        return node.module or ""
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> Iterator[Import]:
    """The pixdiff modules ``name`` imports anywhere in its file, functions included."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(node, name, path.name == "__init__.py")
            # ``from package import module`` imports the submodule
            targets = [
                f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source
                for a in node.names
            ]
        else:
            continue
        for target in dict.fromkeys(targets):
            if target.split(".")[0] == PACKAGE and target != name:
                yield Import(name, target, path, node.lineno)


def layer_of(module: str) -> str | None:
    """The layer whose longest name covers ``module``, or None if none does."""
    best, best_len = None, -1
    for layer, names in LAYERS.items():
        for prefix in names:
            covers = module == prefix or (prefix != PACKAGE and module.startswith(prefix + "."))
            if covers and len(prefix) > best_len:
                best, best_len = layer, len(prefix)
    return best


def layer_problems(modules: dict[str, Path], imports: list[Import]) -> list[str]:
    """Modules in no layer, and imports of a higher layer."""
    order = list(LAYERS)
    problems = [
        f"{shown(path)}: module {name} is in no layer; add it to LAYERS in tests/lint/layering.py"
        for name, path in modules.items()
        if layer_of(name) is None
    ]
    for imp in imports:
        low, high = layer_of(imp.importer), layer_of(imp.imported)
        if low is not None and high is not None and order.index(high) > order.index(low):
            problems.append(
                f"{imp.where()}: {imp.importer} ({low}) imports {imp.imported} ({high}), "
                f"a higher layer; layers, lowest first: {', '.join(order)}"
            )
    return problems


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of ``graph`` (Tarjan 1972), iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while not component or component[-1] != node:
                        component.append(stack.pop())
                        on_stack.discard(component[-1])
                    components.append(component)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return components


def _loop(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest loop through the first module of ``component``, staying inside it."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        node = frontier.pop(0)
        for child in sorted(graph[node] & component):
            if child == start:
                return [*paths[node], start]
            if child not in paths:
                paths[child] = [*paths[node], child]
                frontier.append(child)
    raise AssertionError(f"{sorted(component)} is not strongly connected")


def cycle_problems(modules: dict[str, Path], imports: list[Import]) -> list[str]:
    """One line per group of modules that import each other, naming one loop and its lines."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    lines: dict[tuple[str, str], str] = {}
    for imp in imports:
        if imp.imported in graph:
            graph[imp.importer].add(imp.imported)
            lines.setdefault((imp.importer, imp.imported), imp.where())
    problems = []
    for component in strongly_connected(graph):
        if len(component) > 1:
            loop = _loop(graph, set(component))
            steps = ", ".join(lines[edge] for edge in zip(loop, loop[1:], strict=False))
            others = sorted(set(component) - set(loop))
            also = f"; also in the cycle: {', '.join(others)}" if others else ""
            problems.append(f"import cycle {' -> '.join(loop)} ({steps}){also}")
    return problems


def length_problems(root: Path) -> list[str]:
    """Python files under ``root`` longer than MAX_LINES lines."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        count = len(path.read_text(encoding="utf-8").splitlines())
        if count > MAX_LINES:
            problems.append(f"{shown(path)}: {count} lines, over {MAX_LINES}; split it by concern")
    return problems


def check(root: Path = SRC / PACKAGE) -> list[str]:
    """Every layering, cycle and length problem of the package folder ``root``."""
    modules = module_names(root)
    imports = [imp for name, path in modules.items() for imp in imports_of(name, path, modules)]
    return (
        layer_problems(modules, imports)
        + cycle_problems(modules, imports)
        + length_problems(root.parent)
    )


def main() -> int:
    problems = check()
    for problem in problems:
        print(problem)
    print(f"layering: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

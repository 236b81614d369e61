"""The house rules, read from the code: import direction, the plugin API boundary, sizes.

Every import of the package is read with ``ast`` (lazy imports inside functions too), so a
new arrow that runs back up the layers, an import cycle, or a built-in plugin reaching into
the core fails here with the file and the import named.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "automl_transfer"

#: The packages of automl_transfer, lowest first. A module may import its own package and
#: packages of lower layers, never a package of its own layer or a higher one.
LAYERS = [
    {"errors", "_compat"},
    {"contract", "hookspecs", "components", "datasets", "plugins"},
    {"registry", "storage"},
    {"data", "model"},
    {"training", "space"},
    {"inference", "ranking"},
    {"search"},
    {"reporting"},
    {"plugin", "plugin_testing", "plugin_observers", "demo"},
    {"commands"},
    {"__init__", "__main__"},
]
LAYER_OF = {name: index for index, names in enumerate(LAYERS) for name in names}
#: Python files whose size and function lengths the rules bound (tests and benchmarks aside).
SOURCES = sorted([*PACKAGE.rglob("*.py"), *(ROOT / "plugins").glob("*.py")])
MAX_MODULE_LINES = 420
MAX_FUNCTION_LINES = 66


def _part(path: Path) -> str:
    """The top-level part of ``automl_transfer`` a file belongs to (``search``, ``errors`` ...)."""
    relative = path.relative_to(PACKAGE).with_suffix("")
    return relative.parts[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` for every import in ``path``, relative imports resolved."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.lineno, node.module))
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    return found


def _core_modules() -> dict[str, Path]:
    """Module name -> file, for every module of the package."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def test_every_part_of_the_package_has_a_layer():
    parts = {_part(path) for path in PACKAGE.rglob("*.py")}
    assert parts <= set(LAYER_OF), f"add {sorted(parts - set(LAYER_OF))} to LAYERS"


def test_imports_point_down_the_layers():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        part = _part(path)
        for line, module in _imports(path):
            if not module.startswith("automl_transfer."):
                continue
            target = module.split(".")[1]
            if target == part or target not in LAYER_OF:
                continue
            if LAYER_OF[target] >= LAYER_OF[part]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({part}) imports {module} ({target})")
    assert not wrong, "imports that run back up or across the layers:\n" + "\n".join(sorted(set(wrong)))


def test_there_is_no_import_cycle():
    modules = _core_modules()
    graph = {
        name: {module for _, module in _imports(path) if module in modules and module != name}
        for name, path in modules.items()
    }
    state: dict[str, int] = {}
    cycles = []

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(trail[trail.index(target):] + [target]) if target in trail else target)
            elif target not in state:
                visit(target, [*trail, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


#: The public plugin API, one module per audience: component authors, observers, a plugin's tests.
PLUGIN_API = {"automl_transfer.plugin", "automl_transfer.plugin_observers", "automl_transfer.plugin_testing"}


def test_built_in_plugins_import_only_the_public_plugin_api():
    wrong = []
    for path in sorted((ROOT / "plugins").glob("*.py")):
        for line, module in _imports(path):
            if module.split(".")[0] == "automl_transfer" and ".".join(module.split(".")[:2]) not in PLUGIN_API:
                wrong.append(f"plugins/{path.name}:{line} imports {module}")
            if any(part.startswith("_") and not part.startswith("__") for part in module.split(".")):
                wrong.append(f"plugins/{path.name}:{line} imports the private {module}")
    assert not wrong, "\n".join(wrong)


def test_the_core_uses_optuna_and_timm_privates_only_in_one_isolated_module():
    allowed = {PACKAGE / "storage" / "optuna_internals.py"}
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in PACKAGE.rglob("*.py")
        if path not in allowed
        for line, module in _imports(path)
        if module.split(".")[0] in ("optuna", "timm", "torchvision", "pluggy")
        and any(part.startswith("_") for part in module.split(".")[1:])
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(ROOT)))
def test_modules_and_functions_stay_small(path: Path):
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES, f"{path.name}: split it into modules of one job"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, f"{path.name}: {node.name} has {length} lines"


def test_building_the_cli_parser_imports_no_heavy_library():
    """Every command imports torch, optuna, timm ... inside run(), so `--help` answers at once."""
    import subprocess
    import sys

    code = (
        "import sys; from automl_transfer.commands.cli import build_parser; build_parser(); "
        "print(sorted({'torch', 'timm', 'optuna', 'numpy', 'PIL', 'rich', 'plotly', 'onnx'} & set(sys.modules)))"
    )
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert imported.strip() == "[]"

"""The package layers: a module imports only from its own layer or the ones below it, and no two
modules import each other, directly or in a circle (imports inside functions count too)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# lowest first; a module's layer is that of the longest prefix listed
LAYERS = [
    ["harness.atomic", "harness.cli"],
    ["harness.data", "harness.models"],
    ["methods"],
    ["harness.config"],
    ["harness.run"],
    ["harness.executors", "harness.display"],
    ["harness.analysis"],
    ["harness.launch", "harness.job", "harness.collect", "harness.status", "harness.report", "harness.schema",
     "harness.explain", "harness.export", "harness.bench"],
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int | None:
    best = None
    for level, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > len(best[1]):
                    best = (level, prefix)
    return None if best is None else best[0]


def imports() -> dict[str, set[str]]:
    """Every project module and the project modules it imports."""
    graph = {}
    for path in [*ROOT.glob("harness/**/*.py"), *ROOT.glob("methods/**/*.py")]:
        name, found = module_name(path), set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
                found |= {base} | {f"{base}.{a.name}" for a in node.names}
        graph[name] = {m for m in found if m.split(".")[0] in ("harness", "methods")}
    modules = set(graph)
    return {k: {m for m in v if m in modules} - {k} for k, v in graph.items()}


def test_every_module_has_a_layer():
    assert [m for m in imports() if layer_of(m) is None and m not in ("harness", "methods")] == []


def test_no_module_imports_a_higher_layer():
    upward = [(m, i) for m, deps in imports().items() for i in deps
              if layer_of(m) is not None and layer_of(i) is not None and layer_of(i) > layer_of(m)]
    assert upward == []


def test_no_import_circles():
    graph = imports()
    # the package __init__ re-exporting its own submodules is not a circle of concepts
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}
    circles, done = [], set()

    def visit(module, path):
        if module in path:
            circles.append(path[path.index(module):] + [module])
            return
        if module in done:
            return
        for dep in sorted(graph.get(module, ())):
            visit(dep, path + [module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert circles == []

"""The package's own imports form no cycle, function-level imports included (those hid the
export -> openset -> predict -> export cycle: each import works alone, but the modules cannot be
read, tested or changed apart)."""

import ast
from pathlib import Path

PACKAGE = "pokemon_classifier"
ROOT = Path(__file__).resolve().parents[1] / "src" / PACKAGE


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, name: str, is_package: bool, modules: set[str]) -> set[str]:
    """The package modules that a module's source imports anywhere (top level, functions, classes).
    Importing a.b.c runs a/__init__ and a/b/__init__ too: those count as well."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's own package up
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]  # `from pkg import module`
        else:
            continue
        for t in targets:
            parts = t.split(".")
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {m for m in found if m in modules and m != name}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    return {name: imported(ast.parse(p.read_text(encoding="utf-8")), name, p.name == "__init__.py", set(files))
            for name, p in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None. The package's own __init__ modules are left out of
    the edges *into* a package from its own submodules (a submodule runs its package's __init__
    first by design; only a real import of a sibling that leads back counts)."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(m: str):
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if m.startswith(n + "."):  # a submodule's own package (see above)
                continue
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_the_package_imports_have_no_cycle():
    graph = import_graph()
    assert f"{PACKAGE}.onnx_graph" in graph and f"{PACKAGE}.openset.scoring" in graph  # the walk sees the package
    assert f"{PACKAGE}.openset.scoring" in graph[f"{PACKAGE}.onnx_graph"]  # function-level imports count
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_walk_finds_a_cycle_hidden_in_functions(tmp_path):
    """The old one: export imported openset in a function, openset imported predict in a function,
    predict imported export in a function."""
    pkg = tmp_path / PACKAGE
    (pkg / "openset").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "export.py").write_text("def f():\n    from pokemon_classifier.openset import Scored\n")
    (pkg / "openset" / "__init__.py").write_text("from .fit import extract\n")
    (pkg / "openset" / "fit.py").write_text("def extract():\n    from ..predict import readable_batches\n")
    (pkg / "predict.py").write_text("class C:\n    def load(self):\n        from pokemon_classifier import export\n")
    cycle = find_cycle(import_graph(pkg))
    assert cycle is not None and {f"{PACKAGE}.export", f"{PACKAGE}.predict", f"{PACKAGE}.openset.fit"} <= set(cycle)
    (pkg / "openset" / "fit.py").write_text("def extract():\n    from ..data import readable_batches\n")
    assert find_cycle(import_graph(pkg)) is None


def test_the_scoring_modules_need_only_torch_and_numpy():
    """onnx_graph and predict import them; the ONNX cache key hashes them (onnx_graph.graph_code)."""
    tree = ast.parse((ROOT / "openset" / "scoring.py").read_text(encoding="utf-8"))
    roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    roots |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert roots <= {"__future__", "numpy", "torch"}, roots

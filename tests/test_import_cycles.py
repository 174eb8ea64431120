"""No import cycles among avemo's modules (issue 22.7).

The graph counts every ``import`` a module's source holds -- function-level ones too, since a
function-level import that closes a cycle only hides it -- except annotation-only imports under
``if TYPE_CHECKING:``. Importing ``a.b.c`` counts as importing the package ``a.b`` too (its ``__init__`` runs first),
except the importer's own packages. Modules are found from ``setup.py``'s ``ROOTS`` (the folder -> package
map), so a new module is covered without editing this file.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: setup.py's folder -> package map (``ROOTS``), read without running setup.py
ROOTS: dict[str, str] = next(
    ast.literal_eval(n.value)
    for n in ast.parse((REPO / "setup.py").read_text()).body
    if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "ROOTS"
)

#: Modules whose cycles are owned by other changes right now: a cycle is allowed when all its
#: modules are in one of these sets. Empty: keep it so.
ALLOWED: list[set[str]] = []


def modules() -> dict[str, Path]:
    """Every avemo module name -> its source file."""
    out: dict[str, Path] = {}
    nested = {folder for pkg, folder in ROOTS.items() if pkg != "avemo"}
    for pkg, folder in ROOTS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = [p for p in path.relative_to(REPO / folder).with_suffix("").parts]
            if pkg == "avemo" and parts[0] in nested:
                continue
            out[".".join([pkg, *(p for p in parts if p != "__init__")])] = path
    return out


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def imports_of(name: str, path: Path) -> set[str]:
    """The modules ``name`` imports (absolute names as written, relative ones resolved)."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def walk(node: ast.AST) -> None:
        if _type_checking_only(node):
            for child in getattr(node, "orelse", []):
                walk(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import module`
        for child in ast.iter_child_nodes(node):
            walk(child)

    walk(ast.parse(path.read_text(), str(path)))
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps = set()
        own = {name.rsplit(".", k)[0] for k in range(1, name.count(".") + 1)}
        for dep in imports_of(name, path):
            while dep and dep not in mods:  # `from a.b import func` -> module a.b
                dep = dep.rpartition(".")[0]
            while dep and dep not in own:  # importing a.b.c runs a.b's __init__ first
                if dep in mods and dep != name:
                    deps.add(dep)
                dep = dep.rpartition(".")[0]
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected sets of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(comp)
    return out


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    """The walk counts imports inside functions and skips TYPE_CHECKING blocks."""
    a = tmp_path / "a.py"
    a.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.c\nimport pkg.b\n"
    )
    b = tmp_path / "b.py"
    b.write_text("def f():\n    from pkg.a import x\n")
    c = tmp_path / "c.py"
    c.write_text("import pkg.a\n")
    names = {"pkg.a": a, "pkg.b": b, "pkg.c": c}
    graph = {n: {d for d in imports_of(n, p) if d in names and d != n} for n, p in names.items()}
    assert graph == {"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}, "pkg.c": {"pkg.a"}}
    assert cycles(graph) == [{"pkg.a", "pkg.b"}]


def test_no_import_cycles_among_avemo_modules():
    found = cycles(import_graph())
    unexpected = [sorted(c) for c in found if not any(c <= ok for ok in ALLOWED)]
    assert unexpected == [], f"import cycles: {unexpected}"
    stale = [sorted(ok) for ok in ALLOWED if not any(c <= ok for c in found)]
    assert stale == [], f"ALLOWED sets that hold no cycle any more (drop them): {stale}"


def test_every_avemo_module_imports():
    """Each module imports on its own; an optional third-party package may be missing."""
    failed = []
    for name in modules():
        if name.endswith("__main__"):
            continue
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if (e.name or "").split(".")[0] == "avemo":
                failed.append(f"{name}: {e}")
        except Exception as e:  # noqa: BLE001 - reported below, with the module's name
            failed.append(f"{name}: {type(e).__name__}: {e}")
    assert failed == []

"""Imports sit at module level (issue 22.7); a function-level ``avemo`` import needs a written reason.

Reasons: the CLI and its ``--help`` path stay light (a command's code is imported when it runs),
a framework-free module stays free of torch/lightning/cv2 for the light paths that use it, or
plugin loading would close a cycle at run time. Each reason in ``ALLOWED`` is checked against the
module-level import graph, so an entry whose reason no longer holds fails too. Third-party
imports inside functions (optional extras, heavy frameworks) are not counted here.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from test_import_cycles import _type_checking_only, modules

#: Frameworks no light path may import: each costs from a tenth of a second (cv2) to seconds.
FRAMEWORKS = frozenset({"torch", "lightning", "cv2", "onnxruntime", "torchvision", "torchaudio"})
#: Modules ``avemo --help`` imports (the workflows' own options): no HDF5 library either.
HELP_PATH = frozenset(f"avemo.workflows.{n}" for n in ("demo", "merge", "predict", "report"))

#: Every function-level ``avemo`` import, as (importing module, imported module), by reason.
ALLOWED: dict[str, set[tuple[str, str]]] = {
    # the command table imports a command's code only when that command runs
    "light CLI": {
        ("avemo.cli", "avemo.data.adapters"),
        ("avemo.cli", "avemo.data.manifest"),
        ("avemo.cli", "avemo.data.store"),
        ("avemo.cli", "avemo.extract.runner"),
        ("avemo.cli", "avemo.extract.video.montage"),
        ("avemo.cli", "avemo.fusion.config"),
        ("avemo.cli", "avemo.fusion.train"),
        ("avemo.cli", "avemo.workflows.ablation"),
        # `avemo --help` imports these workflows for their options: no h5py, torch, lightning
        ("avemo.workflows.demo", "avemo.data.store"),
        ("avemo.workflows.demo", "avemo.extract.base"),
        ("avemo.workflows.demo", "avemo.extract.runner"),
        ("avemo.workflows.demo", "avemo.fusion.train"),
        ("avemo.workflows.merge", "avemo.fusion.run"),
        ("avemo.workflows.predict", "avemo.data.store"),
        ("avemo.workflows.predict", "avemo.extract.runner"),
        ("avemo.workflows.predict", "avemo.fusion.predict"),
        ("avemo.workflows.predict", "avemo.fusion.run"),
        ("avemo.workflows.report", "avemo.fusion.predict"),
        ("avemo.workflows.report", "avemo.fusion.run"),
    },
    # a framework-free module stays so: `fuse-train --print-config`, `ablate --dry-run`,
    # audio-only extraction, reading a run folder, merging predictions
    "light module": {
        ("avemo.extract.audio.windowed", "avemo.extract.video.backbones.torchvision_models"),
        ("avemo.extract.video.detectors.blazeface", "avemo.extract.video.detectors.mtcnn"),
        ("avemo.fusion.config", "avemo.fusion.models.base"),
        ("avemo.fusion.ensemble", "avemo.fusion.metrics"),
        ("avemo.fusion.run", "avemo.fusion.datamodule"),
        ("avemo.workflows.ablation.checks", "avemo.fusion.optim"),
        ("avemo.workflows.ablation.folds", "avemo.fusion.tasks"),
        ("avemo.workflows.ablation.scheduler", "avemo.fusion.grid_trainer"),
        ("avemo.workflows.ablation.stacking", "avemo.fusion.grid_trainer"),
        ("avemo.workflows.ablation.stacking", "avemo.fusion.stacked"),
        ("avemo.workflows.ablation.stacking", "avemo.fusion.train"),
    },
    # the imported module imports the importer's package, whose __init__ imports every plugin
    # module in it (``import_modules(__name__)``): at module level that is a cycle at run time
    "plugin loading": {
        ("avemo.extract.video.detectors.blazeface", "avemo.extract.video.pipeline"),
        ("avemo.extract.video.detectors.insight", "avemo.extract.video.pipeline"),
    },
}

MODULES = modules()


def _imported(name: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The avemo modules one import statement names (``from pkg import submodule`` too)."""
    if isinstance(node, ast.Import):
        written = [a.name for a in node.names]
    else:
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
        mod = ".".join(base + ([node.module] if node.module else []))
        written = [mod, *(f"{mod}.{a.name}" for a in node.names)]
    out: list[str] = []
    for dep in written:
        while dep and dep not in MODULES:  # `from a.b import func` -> module a.b
            dep = dep.rpartition(".")[0]
        if dep.split(".")[0] == "avemo" and dep not in out:
            out.append(dep)
    return [d for d in out if not any(o.startswith(d + ".") for o in out)]  # the deepest


def scan(name: str, path: Path) -> tuple[set[str], set[str], set[str]]:
    """(module-level avemo imports, module-level third-party roots, function-level avemo imports)."""
    top: set[str] = set()
    third: set[str] = set()
    inner: set[str] = set()

    def walk(node: ast.AST, in_function: bool) -> None:
        if _type_checking_only(node):
            for child in getattr(node, "orelse", []):
                walk(child, in_function)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            mods = _imported(name, path, node)
            if in_function:
                inner.update(mods)
            else:
                top.update(mods)
                if not mods and not getattr(node, "level", 0):
                    roots = (
                        [a.name for a in node.names]
                        if isinstance(node, ast.Import)
                        else [node.module or ""]
                    )
                    third.update(r.split(".")[0] for r in roots)
        inside = in_function or isinstance(
            node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
        )
        for child in ast.iter_child_nodes(node):
            walk(child, inside)

    walk(ast.parse(path.read_text(), str(path)), False)
    return top, third, inner


SCANS = {name: scan(name, path) for name, path in MODULES.items()}


def closure(start: str) -> tuple[set[str], set[str]]:
    """(avemo modules, third-party roots) that importing ``start`` imports, module level only;
    importing ``a.b.c`` runs ``a`` and ``a.b`` first."""
    seen: set[str] = set()
    third: set[str] = set()
    todo = [start]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        parents = [mod.rsplit(".", k)[0] for k in range(1, mod.count(".") + 1)]
        todo += [p for p in parents if p in MODULES]
        top, roots, _ = SCANS[mod]
        third |= roots
        todo += sorted(top)
    return seen, third


def function_level_imports() -> set[tuple[str, str]]:
    return {(name, dep) for name, (_, _, inner) in SCANS.items() for dep in inner if dep != name}


def test_every_function_level_avemo_import_has_a_written_reason() -> None:
    found = function_level_imports()
    allowed = set().union(*ALLOWED.values())
    missing = sorted(found - allowed)
    assert missing == [], (
        f"function-level avemo imports without a reason (move them to the top, or add them to "
        f"ALLOWED with the reason): {missing}"
    )
    stale = sorted(allowed - found)
    assert stale == [], f"ALLOWED entries no longer imported inside a function (drop them): {stale}"


def test_each_light_reason_holds() -> None:
    """At module level the import would pull what the importer is kept free of."""
    wrong = []
    for importer, dep in sorted(ALLOWED["light CLI"] | ALLOWED["light module"]):
        have_mods, have_third = closure(importer)
        dep_mods, dep_third = closure(dep)
        if importer == "avemo.cli":  # anything new: every command pays for what `import` pulls
            ok = not dep_mods <= have_mods
        else:
            banned = FRAMEWORKS | ({"h5py"} if importer in HELP_PATH else set())
            ok = bool((dep_third - have_third) & banned)
        if not ok:
            wrong.append((importer, dep))
    assert wrong == [], f"these pull nothing the importer is kept free of: move them up: {wrong}"
    assert {i for i, _ in ALLOWED["light CLI"]} <= {"avemo.cli", *HELP_PATH}


def test_each_plugin_loading_reason_holds() -> None:
    """The imported module's import reaches the importer's package, whose __init__ loads every
    module in it: the importer would be imported while it is half-initialised."""
    for importer, dep in sorted(ALLOWED["plugin loading"]):
        package = importer.rpartition(".")[0]
        assert package in closure(dep)[0], (importer, dep)
        assert "import_modules(__name__)" in MODULES[package].read_text(), package


def test_the_scan_sees_function_level_and_submodule_imports(tmp_path: Path) -> None:
    """The walk counts imports inside functions and methods, names ``from pkg import mod`` as
    the submodule, and skips ``if TYPE_CHECKING:`` blocks."""
    src = tmp_path / "m.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "import numpy\n"
        "from avemo import errors\n"
        "if TYPE_CHECKING:\n    from avemo.fusion.run import Run\n"
        "class C:\n    def f(self):\n        from avemo.fusion import metrics as M\n"
        "def g():\n    import torch\n    from .schema import x\n"
    )
    top, third, inner = scan("avemo.m", src)
    assert top == {"avemo.errors"}
    assert third == {"typing", "numpy"}
    assert inner == {"avemo.fusion.metrics", "avemo.schema"}


#: Run in a fresh interpreter: the CLI's entry point on ``argv``, then what it imported.
PROBE = """
import contextlib, io, json, sys
argv = json.loads(sys.argv[1])
if argv is None:
    import avemo.cli
else:
    from avemo.cli import main
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as e:  # --help exits 0
            rc = e.code
    assert rc in (0, None), rc
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def _imported_by(argv: list[str] | None) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_cli_stays_light() -> None:
    """``import avemo.cli`` pulls no numerical library; ``avemo --help`` and ``avemo list
    datasets`` no framework and no HDF5 library (each would add a second or so to every call)."""
    assert not _imported_by(None) & (FRAMEWORKS | {"h5py", "numpy", "pandas"})
    for argv in (["--help"], ["list", "datasets"]):
        assert not _imported_by(argv) & (FRAMEWORKS | {"h5py"}), argv

"""The floors of the house, asserted: who may import whom (README, "Architecture").

* ``harness.core`` (ground floor) imports nothing of ``spaces``, ``generators``,
  ``metrics`` or the top floor of ``harness``, and names no upper module even as a string
  (plug-in folders are found through entry points);
* ``spaces``, ``generators``, ``metrics`` and ``harness.datasets`` import only the ground
  floor (and themselves), never each other or the top floor;
* generator families (``generators/families/<name>/``) never import each other;
* the top floor's rooms (``harness/<room>/``) import only rooms below them in
  :data:`ROOMS` (``cli`` on top; ``errors`` and ``term`` at the bottom);
* no two modules import each other, directly or through a cycle;
* no product file is over ~450 lines (one concern per file).

Imports inside functions count: a lazy import is still a dependency.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "spaces", "generators", "metrics")
MAX_LINES = 470   # "~450 lines at most"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Product modules imported by the file (absolute and relative, at any depth)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            # the longest known module that is a prefix of the import target
            parts = t.split(".")
            for k in range(len(parts), 0, -1):
                cand = ".".join(parts[:k])
                if cand in known:
                    if cand != name:
                        out.add(cand)
                    break
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, name, known) for name, path in modules.items()}


def _floor(module: str) -> str:
    if module == "harness.core" or module.startswith("harness.core."):
        return "core"
    if module == "harness.datasets" or module.startswith("harness.datasets."):
        return "datasets"
    return module.split(".")[0] if not module.startswith("harness") else "top"


ALLOWED = {
    "core": {"core"},
    "spaces": {"core", "spaces"},
    "generators": {"core", "generators"},
    "metrics": {"core", "metrics"},
    "datasets": {"core", "datasets"},
    "top": {"core", "spaces", "generators", "metrics", "datasets", "top"},
}


def test_floors_import_only_downwards():
    bad = []
    for module, deps in _graph().items():
        floor = _floor(module)
        for dep in deps:
            if dep in ("harness",):  # the bare top package holds no code
                continue
            if _floor(dep) not in ALLOWED[floor]:
                bad.append(f"{module} ({floor}) imports {dep} ({_floor(dep)})")
    assert not bad, "imports against the floors:\n" + "\n".join(sorted(bad))


#: the top floor's rooms from the bottom up: a room imports only rooms before it
ROOMS = ("errors", "term", "checks", "evaluate", "results", "config", "conditional", "report",
         "study", "sweep", "importers", "cli")


def _room(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "harness" or len(parts) == 1 or parts[1] in ("core", "datasets"):
        return None
    return parts[1]


def test_top_floor_rooms_import_only_downwards():
    bad = []
    for module, deps in _graph().items():
        room = _room(module)
        if room is None:
            continue
        assert room in ROOMS, f"{module}: room {room!r} is not in ROOMS; place it in the order"
        for dep in deps:
            other = _room(dep)
            if other and other != room and ROOMS.index(other) > ROOMS.index(room):
                bad.append(f"{module} ({room}) imports {dep} ({other})")
    assert not bad, "rooms importing upwards:\n" + "\n".join(sorted(bad))


def test_families_never_import_each_other():
    prefix = "generators.families."
    bad = []
    for module, deps in _graph().items():
        if module.startswith(prefix) and module.count(".") >= 3:
            own = module.split(".")[2]
            bad += [f"{module} imports {d}" for d in deps
                    if d.startswith(prefix) and d.split(".")[2] != own]
    assert not bad, "families import each other:\n" + "\n".join(bad)


UPPER = ("spaces", "generators", "metrics", "harness.datasets", "harness.cli", "harness.study.runner")


def _upper_names_in(text: str) -> list[str]:
    """Upper-floor module names a ground-floor file mentions in a string (``"spaces"``,
    ``"generators.x"``): a module imported by name is a dependency the graph cannot see."""
    tree = ast.parse(text)
    kinds = {id(a) for node in ast.walk(tree) if isinstance(node, ast.Call)
             and getattr(node.func, "id", None) == "Registry" for a in node.args}  # kind names
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in kinds:
            v = node.value.strip()
            if any(v == u or v.startswith(u + ".") for u in UPPER):
                found.append(v)
    return found


def test_ground_floor_names_no_upper_module():
    bad = [f"{p.relative_to(ROOT)}: {name!r}" for p in (ROOT / "harness" / "core").rglob("*.py")
           for name in _upper_names_in(p.read_text())]
    assert not bad, "the ground floor names upper modules:\n" + "\n".join(bad)


def test_the_ground_floor_test_can_fail():
    assert _upper_names_in('BUILTIN = ("harness.datasets.qm9", "spaces")\n') == \
        ["harness.datasets.qm9", "spaces"]


def test_builtin_folders_come_from_entry_points():
    """The plug-in folders are advertised like a third-party package's components."""
    from importlib.metadata import entry_points

    folders = {ep.name: ep.value for ep in entry_points(group="l3dg.builtins")}
    assert folders == {"datasets": "harness.datasets", "denoisers": "generators.denoisers",
                       "families": "generators.families", "metrics": "metrics",
                       "spaces": "spaces"}


def test_no_import_cycles():
    graph = _graph()
    # Tarjan's strongly connected components (package __init__ re-exports excluded: a
    # package importing its own submodules for registration is not a cycle of concerns)
    edges = {m: {d for d in deps if not (m == d.rpartition(".")[0] or d == m.rpartition(".")[0])}
             for m, deps in graph.items()}
    index, low, stack, on, sccs = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    import sys

    sys.setrecursionlimit(10_000)
    for v in edges:
        if v not in index:
            visit(v)
    assert not sccs, f"import cycles: {sccs}"


@pytest.mark.parametrize("path", sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_product_files_stay_small(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(ROOT)} has {n} lines (one concern per file, ~450 at most)"


def test_the_graph_test_can_fail(tmp_path, monkeypatch):
    """The checker sees a sideways import (so a passing run means something)."""
    fake = ROOT / "spaces" / "_architecture_probe.py"
    graph = _imports_of_text("from generators.layout import x\nimport metrics.edm\n", "spaces._probe")
    assert {"generators.layout", "metrics.edm"} <= graph
    assert not fake.exists()


def _imports_of_text(text: str, name: str) -> set[str]:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(text)
    return _imports(Path(fh.name), name, set(_modules()))


@pytest.mark.parametrize("registry, base", [("SPACES", "spaces.base:Space"),
                                            ("DENOISERS", "generators.denoisers.base:Denoiser"),
                                            ("METRICS", "metrics.base:Metric")])
def test_registries_check_the_base_class(registry, base):
    import importlib

    from harness.core import registry as reg

    module, _, cls = base.partition(":")
    importlib.import_module(module)
    r = getattr(reg, registry)
    with pytest.raises(TypeError, match=f"does not subclass {module}.{cls}"):
        r.register("not_a_subclass")(type("NotASubclass", (), {}))
    assert "not_a_subclass" not in r._entries

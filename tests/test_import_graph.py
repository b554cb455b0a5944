"""No module of var_fast imports itself in a circle, counting every import statement (also those inside
functions): the import graph is read off the source with ``ast``. Every module also imports on its own."""
import ast
import os
import subprocess
import sys
from typing import Dict, List, Set

import pytest

import var_fast

PACKAGE_DIR = os.path.dirname(os.path.abspath(var_fast.__file__))
# registers fake kernels for the ops the compiled extension defines: imported by the loader once they exist
LOADED_BY_THE_EXTENSION = {"var_fast.native.fake_kernels"}


def modules_of(package_dir: str, package: str) -> Dict[str, str]:
    """dotted module name -> file, for every .py under the package."""
    found = {}
    for folder, _, files in os.walk(package_dir):
        rel = os.path.relpath(folder, package_dir)
        parts = [package] + ([] if rel == "." else rel.split(os.sep))
        for name in files:
            if name.endswith(".py"):
                dotted = ".".join(parts if name == "__init__.py" else parts + [name[:-3]])
                found[dotted] = os.path.join(folder, name)
    return found


def top_level_names(path: str) -> Set[str]:
    """Names a module binds at its top level (what ``from module import name`` can take from it)."""
    names = set()
    for node in ast.parse(open(path).read(), path).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def import_graph(package_dir: str, package: str) -> Dict[str, Set[str]]:
    """module -> the package's modules it imports (parents imported implicitly are not edges; a name
    that is neither a Python submodule nor bound in the package, such as the compiled ``_C``, is not
    an edge either)."""
    modules = modules_of(package_dir, package)
    graph = {name: set() for name in modules}
    bound = {name: top_level_names(path) for name, path in modules.items()}
    for name, path in modules.items():
        is_package = path.endswith("__init__.py")
        here = name if is_package else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(open(path).read(), path)):
            if isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                    target = ".".join(filter(None, [base, node.module]))
                else:
                    target = node.module
                for alias in node.names:
                    if f"{target}.{alias.name}" in modules:
                        graph[name].add(f"{target}.{alias.name}")
                    elif target in modules and (alias.name in bound[target] or alias.name == "*"):
                        graph[name].add(target)
        graph[name].discard(name)
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """One cycle (as a path that returns to its start) per strongly connected group of modules."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(_path_within(graph, sorted(group)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _path_within(graph, group):
    start, path, seen = group[0], [group[0]], {group[0]}
    while True:
        nxt = sorted(w for w in graph[path[-1]] if w in group)
        back = [w for w in nxt if w == start]
        if back and len(path) > 1:
            return path + [start]
        step = next((w for w in nxt if w not in seen), start)
        if step == start:
            return path + [start]
        path.append(step)
        seen.add(step)


def test_var_fast_has_no_import_cycle():
    graph = import_graph(PACKAGE_DIR, "var_fast")
    assert len(graph) > 20 and "var_fast.ops" in graph
    assert cycles(graph) == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles(graph))


def test_the_check_finds_a_cycle(tmp_path):
    """The checker itself: a package whose modules import each other in a circle (one import inside a
    function, one relative, one absolute) is reported."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import x\n")
    (pkg / "c.py").write_text("import pkg.a\nx = 1\n")
    (pkg / "d.py").write_text("from . import c\nfrom . import _compiled\n")
    graph = import_graph(str(pkg), "pkg")
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.c"} and graph["pkg.d"] == {"pkg.c"}
    assert cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]]
    (pkg / "c.py").write_text("x = 1\n")
    assert cycles(import_graph(str(pkg), "pkg")) == []


def test_every_module_imports_on_its_own():
    """Each module imported first, with no var_fast module loaded before it (an import that works only
    after another module was imported fails here). One interpreter: torch stays loaded in between."""
    names = sorted(n for n in modules_of(PACKAGE_DIR, "var_fast") if not n.endswith("__main__")
                   and n not in LOADED_BY_THE_EXTENSION)
    script = ("import importlib, sys, torch\n"
              "for name in sys.argv[1:]:\n"
              "    for loaded in [m for m in sys.modules if m == 'var_fast' or m.startswith('var_fast.')]:\n"
              "        del sys.modules[loaded]\n"
              "    importlib.import_module(name)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.path.dirname(PACKAGE_DIR),
                                                                     os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", script, *names], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

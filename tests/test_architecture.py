"""The codebase's shape, checked: the library never talks to the terminal, and its modules import
one another without a cycle (data flows one way: embed -> cache -> heads -> runs -> look/serve)."""

import ast

from tests.conftest import ROOT

LIBRARY = ("embed", "heads", "cache")


def library_modules():
    """{dotted name: parsed module} of every library module."""
    modules = {}
    for package in LIBRARY:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            modules[name] = ast.parse(path.read_text(), str(path))
    return modules


def test_no_library_module_prints_or_imports_click():
    offences = []
    for name, tree in library_modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "click" for a in node.names):
                offences.append(f"{name}:{node.lineno}: imports click")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "click":
                offences.append(f"{name}:{node.lineno}: imports click")
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                offences.append(f"{name}:{node.lineno}: print(...)")
            elif isinstance(node, ast.Attribute) and node.attr in ("stdout", "stderr") and \
                    getattr(node.value, "id", None) == "sys":
                offences.append(f"{name}:{node.lineno}: uses sys.{node.attr}")
    assert offences == []


def test_library_modules_import_each_other_without_a_cycle():
    modules = library_modules()
    graph = {}
    for name, tree in modules.items():
        imported = set()
        for node in ast.walk(tree):
            targets = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            imported.update(t for t in targets if t in modules and t != name)
        graph[name] = imported
    cycles, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


PROJECT_FILES = {".ci", ".gitignore", "Makefile", "README.md", "cli.py", "mkdocs.yml", "pyproject.toml", "setup.cfg",
                 "bench", "cache", "docs", "embed", "examples", "harness", "heads", "tests"}


def test_the_repository_root_tracks_only_the_project():
    """A command run with the project root as its folder once left its outputs there, and they were
    committed: the root holds the project's own files and nothing else."""
    import subprocess
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert {line.split("/")[0] for line in tracked.splitlines()} <= PROJECT_FILES

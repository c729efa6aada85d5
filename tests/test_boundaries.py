"""Package boundaries: the torch-free modules import without torch, and no two modules import each
other, not even through an import inside a function."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

TORCH_FREE = [
    "tinylm.config",
    "tinylm.layout",
    "tinylm.transforms",
    "tinylm.runtime",
    "tinylm.train.schedule",
    "tinylm.train.progress",
    "tinylm.train.order",
    "tinylm.train.interrupt",
    "tinylm.train.windows",
    "tinylm.nptrain.trainer",
    "tinylm.generate.loop",
    "tinylm.generate.sampling",
]


def test_torch_free_modules_import_with_torch_unimportable() -> None:
    # a None entry in sys.modules makes `import torch` raise ImportError, wherever it happens
    code = "import sys, importlib\nsys.modules['torch'] = None\n" + "".join(
        f"importlib.import_module({m!r})\n" for m in TORCH_FREE
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={"PYTHONPATH": str(SRC)})  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_train_schedule_does_not_load_torch() -> None:
    code = "import sys, tinylm.train.schedule; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={"PYTHONPATH": str(SRC)})  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def module_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the tinylm modules it imports anywhere in its body (function-level imports included;
    `from a import b` counts as importing a.b when b is a module, else a). Importing a.b.c also runs the
    packages a and a.b that are not already the importer's own: they count as imported too."""
    files = {_module_name(root, f): f for f in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, f in files.items():
        package = name if f.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    base = ".".join([*package.split(".")[:len(package.split(".")) - node.level + 1], base]).strip(".")
                for a in node.names:
                    edges.add(f"{base}.{a.name}" if f"{base}.{a.name}" in files else base)
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
        edges |= {".".join(e.split(".")[:i]) for e in edges for i in range(1, e.count(".") + 1)}
        graph[name] = {e for e in edges if e in files and e not in own}
    return graph


def _module_name(root: Path, f: Path) -> str:
    parts = f.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_the_cycle_finder_finds_a_lazy_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from pkg import a\n")
    assert find_cycle(module_graph(pkg)) == ["pkg.a", "pkg.b", "pkg.a"]


def test_no_import_cycles() -> None:
    cycle = find_cycle(module_graph(SRC / "tinylm"))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])

"""Imports flow one way: the tree is the data path (STYLE.md item 1).

    errors -> images -> datasets -> utils -> formats -> layers -> graph -> plan -> loader -> train -> summary/model
    -> the package's public API (__init__: load, optimizers, losses...) -> federated -> cli

A package may import itself and anything to its left (and the compiled _kernels), never
anything to its right.  Checked on the source text so a violating import fails even if
it sits in a function that no test happens to call.
"""
import ast
from pathlib import Path

import edgecore

PACKAGE = Path(edgecore.__file__).resolve().parent
ORDER = ["errors", "images", "datasets", "utils", "_kernels", "formats", "layers", "graph", "plan", "loader",
         "train", "summary", "model", "transfer", "grayscale", "optimizers", "losses", "callbacks",
         "__init__", "federated", "cli", "__main__"]


def _rank(module):
    top = module.split(".")[0]
    return ORDER.index(top)


def _edgecore_imports(path):
    package = path.relative_to(PACKAGE).with_suffix("").parts
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(package[:-node.level]) if node.level <= len(package) else []
            target = ".".join(base + ([node.module] if node.module else []))
            if target:
                yield target, node.lineno
            else:  # "from . import x": a submodule, or a name of the package's API
                for alias in node.names:
                    yield (alias.name if alias.name in ORDER else "__init__"), node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("edgecore."):
            yield node.module[len("edgecore."):], node.lineno


def test_imports_flow_one_way():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        for target, line in _edgecore_imports(path):
            if _rank(target) > _rank(module):
                bad.append(f"{path.relative_to(PACKAGE)}:{line} imports {target}")
    assert not bad, "imports against the data path:\n" + "\n".join(bad)

"""The structure docs/architecture.md describes: quant/ sub-packages import one way (numerics <- algorithms <- onnx <-
layers <- runtimes <- the stages), and no two top-level rooms of shrink import each other, directly or through
others (imports inside functions count; ``if TYPE_CHECKING:`` blocks do not); no function over 60 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import shrink

SRC = Path(shrink.__file__).parent
#: quant/ sub-packages from the bottom up; a module may import its own level and the ones below it
QUANT_LEVELS = ("numerics", "algorithms", "onnx", "layers", "runtimes")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[str]:
    """Every shrink module imported anywhere in ``tree`` (``from a import b`` counts as ``a`` and ``a.b``)."""
    out: list[str] = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            out += [name for child in node.orelse for name in _imports(ast.Module([child], []))]
            continue
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        out += _imports(node)
    return [name for name in out if name == "shrink" or name.startswith("shrink.")]


def _all_imports() -> dict[str, list[str]]:
    return {_module_name(p): _imports(ast.parse(p.read_text())) for p in sorted(SRC.rglob("*.py"))}


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _known(name: str, modules: dict[str, list[str]]) -> str | None:
    """``name`` as a module of shrink (``from pkg import function`` names a module only sometimes)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def test_quant_subpackages_import_one_way():
    modules = _all_imports()
    wrong = []
    for module, imported in modules.items():
        parts = module.split(".")
        if parts[:2] != ["shrink", "quant"] or len(parts) < 3 or parts[2] not in QUANT_LEVELS:
            continue
        level = QUANT_LEVELS.index(parts[2])
        for name in imported:
            target = _known(name, modules)
            if target is None or not target.startswith("shrink.quant"):
                continue
            tparts = target.split(".")
            if len(tparts) < 3 or tparts[2] not in QUANT_LEVELS:  # the quant package itself or a stage module
                wrong.append(f"{module} imports {target} (a stage or the quant package)")
            elif QUANT_LEVELS.index(tparts[2]) > level:
                wrong.append(f"{module} imports {target} (a higher level)")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_each_quant_subpackage_says_what_it_holds_and_may_import():
    for level in QUANT_LEVELS:
        doc = ast.get_docstring(ast.parse((SRC / "quant" / level / "__init__.py").read_text()))
        assert doc and "import" in doc, f"shrink.quant.{level} needs a docstring saying what it may import"


def test_no_import_circles_between_top_level_rooms():
    modules = _all_imports()
    edges: dict[str, set[str]] = {}
    for module, imported in modules.items():
        room = _room(module)
        for name in imported:
            target = _known(name, modules)
            other = _room(target) if target else None
            if room and other and other != room:
                edges.setdefault(room, set()).add(other)

    def reaches(start: str, goal: str) -> list[str] | None:
        stack, seen = [[start]], {start}
        while stack:
            path = stack.pop()
            for nxt in sorted(edges.get(path[-1], ())):
                if nxt == goal:
                    return [*path, nxt]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append([*path, nxt])
        return None

    circles = {" -> ".join(c) for room in edges if (c := reaches(room, room))}
    assert not circles, "import circles between rooms:\n" + "\n".join(sorted(circles))
    assert {"quant", "export", "eval", "report"} <= set(edges)  # the graph was really read


def test_no_function_in_src_is_longer_than_60_lines():
    long = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > 60:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "split these functions:\n" + "\n".join(long)

"""The package stays a place a newcomer can live in: no import cycle (imports inside functions count),
no module over 400 lines, no function over 60 lines, and pages that import no torch."""
import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rerelrp"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules():
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(tree, modules):
    """Project modules a module imports, anywhere in it (a module's parent packages are imported with it)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("rerelrp"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("rerelrp"))
    return {name for name in found if name in modules}


def _graph():
    modules = _modules()
    graph = defaultdict(set)
    for name, path in modules.items():
        for target in _imports(ast.parse(path.read_text()), modules):
            parts = target.split(".")
            for i in range(2, len(parts) + 1):  # importing a.b.c runs a.b's __init__ too
                parent = ".".join(parts[:i])
                if parent in modules and parent != name and not name.startswith(parent + "."):
                    graph[name].add(parent)
    return modules, graph


def _cycle_from(start, graph):
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in graph[node]:
            if nxt == start:
                return path + [start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, path + [nxt]))
    return None


def test_no_import_cycles_even_through_imports_inside_functions():
    modules, graph = _graph()
    cycles = {" -> ".join(c) for name in modules if (c := _cycle_from(name, graph))}
    assert not cycles, sorted(cycles)


def test_no_module_over_400_lines():
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, long


def test_no_function_over_60_lines():
    long = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {length}")
    assert not long, long


def test_the_checker_finds_a_cycle_through_a_function_level_import():
    graph = defaultdict(set, {"a": {"b"}, "b": {"a"}})
    assert _cycle_from("a", graph) == ["a", "b", "a"]
    tree = ast.parse("def f():\n    from rerelrp.x import y\n")
    assert _imports(tree, {"rerelrp.x", "rerelrp.x.y"}) == {"rerelrp.x", "rerelrp.x.y"}


def test_pages_import_no_torch():
    pages = [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py"))]
    users = [p.name for p in pages if {"torch"} & {n.split(".")[0] for n in _top_names(ast.parse(p.read_text()))}]
    assert not users, users


def _top_names(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


# private attributes read on another object: (file, expression) -> why it is allowed
OWN_CLASS = {("rerelrp/method/learner.py", "learner._restore"): "from_state fills an instance of its own class"}


def _private_reads(tree):
    """``x._name`` where x is not self, cls or super(): a private attribute of someone else's object."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
                continue
            yield ast.unparse(node)


def test_no_private_attribute_is_read_across_objects():
    files = [*PACKAGE.rglob("*.py"), ROOT / "app.py", *(ROOT / "pages").glob("*.py")]
    found = [(str(p.relative_to(ROOT)), expr) for p in files for expr in _private_reads(ast.parse(p.read_text()))]
    assert [f for f in found if f not in OWN_CLASS] == []


def test_the_private_read_finder_finds_one():
    tree = ast.parse("def f(queue, self):\n    queue._reader.poll()\n    self._ok()\n    super()._ok()\n")
    assert list(_private_reads(tree)) == ["queue._reader"]

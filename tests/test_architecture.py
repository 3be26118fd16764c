"""The house: every import points down the layers (demos -> model/tools -> model/serving -> model/checkpoint ->
model -> ttjax -> mesh) with no cycle, and no module reaches into another's leading-underscore names.

Read from the source with ast, function-level imports included (a lazy import hides a cycle, it does not
remove it).
"""

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent
PACKAGES = ("mesh", "ttjax", "model", "demos")
# Lower may not import higher. model/checkpoint sits beside the model's math: it builds params from files.
LAYERS = [("mesh",), ("ttjax",), ("model",), ("model.checkpoint",), ("model.serving",), ("model.tools",), ("demos",)]


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = modules()


def layer(module: str) -> int:
    best = max((prefix for group in LAYERS for prefix in group if module == prefix or module.startswith(prefix + ".")), key=len)
    return next(i for i, group in enumerate(LAYERS) if best in group)


def imports(module: str) -> set[str]:
    """The project modules `module` imports, anywhere in its body, and the packages whose __init__ an import runs
    (importing a.b.c from outside package a.b runs a/b/__init__.py first)."""
    tree = ast.parse(MODULES[module].read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from a.b import c` imports a.b, and a.b.c when c is a module
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:  # a name inside a module: the module
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
                parent = name.rpartition(".")[0]
                while parent and not (module + ".").startswith(parent + "."):
                    found.add(parent)
                    parent = parent.rpartition(".")[0]
    return found


GRAPH = {m: imports(m) for m in MODULES}


def test_every_import_points_down():
    upward = [f"{a} -> {b}" for a, deps in GRAPH.items() for b in deps if layer(b) > layer(a)]
    assert not upward, "imports that point up a layer:\n" + "\n".join(sorted(upward))


def test_no_import_cycle():
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(GRAPH[m]):
            if state.get(d) == "open":
                cycles.append(" -> ".join(stack[stack.index(d) :] + [d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = "done"

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def _own_private_names(tree) -> set[str]:
    """Leading-underscore names a module defines: module-level, in its classes, and as self._x attributes."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return {n for n in names if n.startswith("_")}


# The standard library's documented functions whose names begin with an underscore (os._exit: leave without
# Python's teardown) are public API, not another module's internals.
# argparse shows a parser's flags only through its underscored attributes (the CLI sweep generates cases from them).
STDLIB_UNDERSCORED = {"os._exit", "parser._actions", "p._actions", "argparse._SubParsersAction", "argparse._HelpAction"}


def test_no_module_reaches_into_another_modules_private_names():
    files = {name: path for name, path in MODULES.items()} | {f"tests.{p.stem}": p for p in (ROOT / "tests").glob("*.py")}
    found = []
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        own = _own_private_names(tree)
        for node in ast.walk(tree):
            private = []
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                private = [] if ast.unparse(node) in STDLIB_UNDERSCORED else [node.attr]
            elif isinstance(node, ast.ImportFrom):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
            found += [f"{path.relative_to(ROOT)}:{node.lineno}: {p}" for p in private if p not in own or isinstance(node, ast.ImportFrom)]
    assert not found, "leading-underscore names used from another module:\n" + "\n".join(found)


def test_every_error_raised_is_a_ttjax_error():
    """One exception family: what the project raises is TTJaxError or one of model.errors' kinds (argparse's own
    protocol and a benchmark's report of a failed child process aside)."""
    import model.errors

    family = {name for name, cls in vars(model.errors).items() if isinstance(cls, type) and issubclass(cls, model.errors.TTJaxError)}
    allowed = family | {"argparse.ArgumentTypeError", "SystemExit", "WorkerCrash"}
    found = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                if isinstance(exc, (ast.Name, ast.Attribute)) and ast.unparse(exc) not in allowed:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: raise {ast.unparse(exc)}")
    assert not found, "errors outside the TTJaxError family:\n" + "\n".join(found)


def test_the_layer_table_covers_every_module():
    assert all(isinstance(layer(m), int) for m in MODULES)
    assert {"model.serving.generator", "model.tools.cli", "model.checkpoint.tokenizer", "model.params"} <= set(MODULES)

"""The package's layering (docs/architecture.md): no import cycle, arrows that point down, Lightning only in the
trainer, the library apart from the application, and no logging or warning settings in the library."""
import ast
import re
from pathlib import Path

from helpers import ROOT

SRC = ROOT / "src" / "molt"
#: one file per method; a method file may import base.py and the files of the ideas it is built from
METHOD_FILES = ("molt", "mettle", "lavish", "dgsct", "avmoe")


def _module_name(path: Path) -> str:
    relative = path.relative_to(SRC.parent).with_suffix("")
    parts = list(relative.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = name.split(".") if is_package else name.split(".")[:-1]
                    parts = parts[:len(parts) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules and not target.startswith(("lightning", "pytorch_lightning")):
                    target = target.rpartition(".")[0]
                if target and target != name:
                    imported.add(target)
        graph[name] = imported
    return graph


def test_no_import_cycle_anywhere():
    graph = {name: {d for d in deps if d.startswith("molt") and not d.startswith(name + ".")}
             for name, deps in _import_graph().items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_arrows_point_down():
    graph = _import_graph()
    for name, deps in graph.items():
        lightning = {d for d in deps if d.startswith(("lightning", "pytorch_lightning"))}
        assert not lightning or name == "molt.app.train", f"{name} imports Lightning"
        if name.startswith(("molt.data", "molt.methods", "molt.features", "molt.backbones")):
            upward = {d for d in deps if d.startswith(("molt.tasks", "molt.model", "molt.app.train",
                                                       "molt.app.evaluate", "molt.app.cli"))}
            assert not upward, f"{name} imports {sorted(upward)}"
        if name.startswith("molt.tasks."):
            own = ".".join(name.split(".")[:3])
            others = {d for d in deps if d.startswith("molt.tasks.") and not d.startswith(own)
                      and d not in ("molt.tasks.base", "molt.tasks.spec", "molt.tasks.predicting",
                                                           "molt.tasks.peer_layers")}
            assert not others, f"{name} imports another task: {sorted(others)}"
            assert not {d for d in deps if d.startswith(("molt.model", "molt.app.train", "molt.app.cli"))}, name
        if name.endswith(".prepared") or name.endswith(".reader"):
            assert not {d for d in deps if d.endswith(".synthetic") and d != "molt.data.synthetic"}, \
                f"{name} (real data) imports a generator"
            assert "molt.data.synthetic" not in deps, f"{name} (real data) imports the generator's primitives"


def test_the_library_never_imports_the_application():
    graph = _import_graph()
    assert "molt.app.train" in graph and "molt.model" in graph
    for name, deps in graph.items():
        if name == "molt.__main__" or name.startswith("molt.app"):
            continue
        assert not {d for d in deps if d.startswith("molt.app")}, f"{name} (library) imports the application"


def test_no_method_file_imports_another_method():
    graph = _import_graph()
    files = {f"molt.methods.{name}" for name in METHOD_FILES}
    assert files <= set(graph)
    for name in files:
        assert not (graph[name] & files), f"{name} imports {sorted(graph[name] & files)}"


def test_the_library_sets_no_logging_or_warning_filters():
    settings = re.compile(r"logging\.basicConfig|\.setLevel\(|warnings\.(filterwarnings|simplefilter)|captureWarnings")
    library = [path for path in SRC.rglob("*.py") if "app" not in path.relative_to(SRC).parts]
    assert len(library) > 50
    offenders = [str(path.relative_to(SRC)) for path in library if settings.search(path.read_text())]
    assert offenders == []
    assert settings.search((SRC / "app" / "cli.py").read_text())  # the application is where they are set


"""The import graph of peftlab: no circles among its modules, and config reading without torch.

An edge A -> B is an import of peftlab module B that A runs when it is imported: a statement at
module level (also inside a top-level ``try`` or ``if``), not one inside a function, nor one
under ``if TYPE_CHECKING:``. ``from pkg import name`` is an edge to ``pkg.name`` when that is a
module, else to ``pkg``. An import inside a function that would close a circle is allowed only
when it keeps torch out of config reading or analysis, and its line says so (``# torch stays out``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import peftlab

SRC = Path(peftlab.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(tree: ast.Module, lines: list[str]):
    """Import statements that run when the module is imported."""
    pending = list(tree.body)
    while pending:
        node = pending.pop(0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(node.test):
                pending += node.body + node.orelse
        elif isinstance(node, ast.Try):
            pending += node.body + node.orelse + node.finalbody + [n for h in node.handlers for n in h.body]


def all_but_torch_guards(tree: ast.Module, lines: list[str], exempt: str = "# torch stays out"):
    """Every import statement (inside functions too, not under ``if TYPE_CHECKING:``) except those whose
    line says they keep torch out."""
    pending = list(tree.body)
    while pending:
        node = pending.pop(0)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if not exempt or exempt not in lines[node.lineno - 1]:
                yield node
            continue
        pending += list(ast.iter_child_nodes(node))


def every_import(tree: ast.Module, lines: list[str]):
    """Every import statement, inside functions too, not under ``if TYPE_CHECKING:``."""
    return all_but_torch_guards(tree, lines, exempt="")


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, pending = set(), [start]
    while pending:
        for nxt in graph[pending.pop()] - seen:
            seen.add(nxt)
            pending.append(nxt)
    return seen


def import_graph(imports=top_level_imports) -> dict[str, set[str]]:
    files = {module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        text = path.read_text()
        for node in imports(ast.parse(text), text.split("\n")):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            edges |= {t for t in targets if t in files and t != name}
        graph[name] = edges
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One path per strongly connected component of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_the_imports_it_should():
    graph = import_graph()
    assert "peftlab.utils.errors" in graph["peftlab.utils.files"]
    assert "peftlab.tuners.lora.config" in graph["peftlab.tuners"]  # an import in a package's __init__
    assert "peftlab.tuners.ranks" in graph["peftlab.tuners.adaptive.model"]  # from peftlab.tuners import ranks


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_among_peftlab_modules():
    assert circles(import_graph()) == []


def test_imports_inside_functions_close_no_circle_unless_they_keep_torch_out():
    assert circles(import_graph(all_but_torch_guards)) == []


def test_no_import_circles_even_through_imports_inside_functions():
    assert circles(import_graph(every_import)) == []


def test_the_registry_of_methods_lies_below_the_config_and_the_tuners_code():
    """peftlab.config.schema reads a method's section through config's own registry (peftlab.config.methods),
    which peftlab.tuners fills: the tuners' registry imports the method configs and nothing that imports
    peftlab.config.schema or the tuners' code."""
    graph = import_graph(every_import)
    assert "peftlab.config.methods" in graph["peftlab.config.schema"]
    assert "peftlab.config.methods" in graph["peftlab.tuners"] and "peftlab.tuners.plugins" in graph["peftlab"]
    below = reachable(graph, "peftlab.tuners")
    assert not below & {
        "peftlab.config.schema",
        "peftlab.tuners.base",
        "peftlab.quant.bases",
        "peftlab.models.backbones",
    }


def test_reading_a_config_imports_no_torch():
    code = (
        "import sys; import peftlab.config.schema as c; c.load_config('configs/downstream.yaml'); "
        "print(sorted(m for m in ('torch', 'timm', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=SRC.parents[1])
    assert out.stdout.strip() == "[]"


def test_the_study_command_reads_its_study_before_torch_so_it_can_pin_the_arithmetic():
    """`peftlab study` pins the CPU arithmetic (train.reproducible) after reading the study file and
    before its workers start: the modules it imports up to then must not bring torch in."""
    code = (
        "import sys; import peftlab.study.runner, peftlab.study.spec as s; "
        "s.load_study('configs/studies/default.yaml'); "
        "print(sorted(m for m in ('torch', 'timm', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=SRC.parents[1])
    assert out.stdout.strip() == "[]"


def test_checking_configs_against_the_model_imports_no_peft():
    """The checks of every method against a meta model (targets, patterns, ranks) need no peft, which
    brings transformers, seconds of imports: the tuners import it where they inject. (A study's dry-run
    also counts each method's size by injecting it on the meta device, peftlab.tuners.params: that imports it.)"""
    code = (
        "import sys; from peftlab.tuners import TUNERS; "
        "from peftlab.tuners.base import TunerContext, check_config, planned_ranks; "
        "from peftlab.study.spec import load_study; from peftlab.tuners.params import meta_model; "
        "[spec.load(which) for spec in TUNERS.values() for which in ('check', 'apply', 'ranks') "
        "if getattr(spec, which)]; "
        "[(check_config(s.config.method, meta_model(s.config), TunerContext.for_checks(s.config)), "
        "planned_ranks(s.config.method, meta_model(s.config))) "
        "for s in load_study('configs/studies/methods.yaml').runs]; "
        "print(sorted(m for m in ('peft', 'transformers', 'bitsandbytes') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=SRC.parents[1])
    assert out.stdout.strip() == "[]"


def with_type_checking_imports(tree: ast.Module, lines: list[str]):
    """Every import statement, inside functions and under ``if TYPE_CHECKING:`` too."""
    return (node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)))


def subpackage_graph(graph: dict[str, set[str]], package: str) -> dict[str, set[str]]:
    """The subpackages of ``package`` as nodes, each standing for every module inside it: an edge A -> B
    when a module of A imports one of B."""
    files = set(graph)
    subpackages = {m for m in files if m.rpartition(".")[0] == package and any(f.startswith(m + ".") for f in files)}

    def owner(module: str) -> str | None:
        return next((s for s in subpackages if module == s or module.startswith(s + ".")), None)

    edges = {s: set() for s in subpackages}
    for module, targets in graph.items():
        a = owner(module)
        for b in filter(None, map(owner, targets)):
            if a and b != a:
                edges[a].add(b)
    return edges


def packages_with_subpackages(graph) -> list[str]:
    return sorted({m.rpartition(".")[0] for m in graph if any(f.startswith(m + ".") for f in graph)} - {""})


def test_the_subpackages_of_a_package_import_each_other_in_no_circle():
    """analysis's results, stats, figures, report, paper and archive form layers; so do study's tuning/ and
    executors/ beside spec, data's readers/ and text/, training's monitors/ and tracking/, and the method
    folders of tuners/. Imports inside functions and under TYPE_CHECKING count (the paper's Study has a
    module of its own, so build, figures and tables no longer import each other through it)."""
    graph = import_graph(with_type_checking_imports)
    checked = [p for p in packages_with_subpackages(graph) if p != "peftlab"]
    assert {"peftlab.analysis", "peftlab.study", "peftlab.data", "peftlab.training", "peftlab.tuners"} <= set(checked)
    assert {p: circles(subpackage_graph(graph, p)) for p in checked} == dict.fromkeys(checked, [])


# config reads a method's section through its own registry (peftlab.config.methods), which the methods fill
# when peftlab is imported (peftlab/__init__.py imports peftlab.tuners and its plugins' finder), as timm's
# models register themselves: no config module names peftlab.tuners, and the packages form layers.


def test_the_domain_packages_import_each_other_in_no_circle():
    """utils, config, data, models, quant, tuners, training, study, analysis, bench and cli form layers (the
    models hand the data path what it needs, the recipe trains the offline bases, the hub cache and the block
    names lie where both sides read them); imports inside functions and under TYPE_CHECKING count."""
    graph = import_graph(with_type_checking_imports)
    readers = {
        m
        for m, targets in graph.items()
        if m.startswith("peftlab.config") and "peftlab.tuners" in {".".join(t.split(".")[:2]) for t in targets}
    }
    assert readers == set()
    edges = subpackage_graph(graph, "peftlab")
    assert {"peftlab.config", "peftlab.data", "peftlab.models", "peftlab.training", "peftlab.tuners"} <= set(edges)
    assert circles(edges) == []


def test_no_circles_among_modules_even_through_type_checking_imports():
    assert circles(import_graph(with_type_checking_imports)) == []


def test_the_subpackage_check_finds_a_circle():
    graph = {"p.a.x": {"p.b.y"}, "p.b.y": {"p.c.z"}, "p.c.z": {"p.a.w"}, "p.a.w": set(), "p.a": set(), "p.b": set()}
    graph |= {"p.c": set(), "p": set()}
    assert circles(subpackage_graph(graph, "p")) == [["p.a", "p.b", "p.c"]]


def test_peftlab_has_a_package_per_domain():
    """At most 14 entries in src/peftlab and at most 15 modules of its own in any package (issue 51)."""
    entries = [p for p in SRC.iterdir() if p.name != "__pycache__"]
    assert len(entries) <= 14, sorted(p.name for p in entries)
    crowded = {
        str(d.relative_to(SRC)): n
        for d in [SRC, *(p for p in SRC.rglob("*") if p.is_dir() and p.name != "__pycache__")]
        if (n := len([f for f in d.glob("*.py") if f.name != "__init__.py"])) > 15
    }
    assert crowded == {}


def test_the_package_data_globs_name_files_that_exist():
    """A non-editable install ships only what pyproject's package-data names: each glob must still match
    after a move (the paper's template and bibliography, PEFT's type table)."""
    import tomllib

    globs = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert {pattern: bool(list(SRC.glob(pattern))) for pattern in globs["peftlab"]} == dict.fromkeys(
        globs["peftlab"], True
    )


# The floors of peftlab, lowest first: a module imports only from its own floor or those below it (imports inside
# functions and under TYPE_CHECKING count). The Python API (peftlab.cli.api) lies above the library and below the
# commands, which call it; peftlab itself (its __init__, re-exporting the API, and __main__) is the top.
FLOORS = [
    "peftlab.utils",
    "peftlab.config",
    "peftlab.data",
    "peftlab.models",
    "peftlab.quant",
    "peftlab.tuners",
    "peftlab.training",
    "peftlab.records",
    "peftlab.study",
    "peftlab.analysis",
    "peftlab.bench",
    "peftlab.cli.api",
    "peftlab.cli",
    "peftlab",
]


def floor(module: str) -> int:
    """The index in FLOORS of the deepest entry that is ``module`` or holds it."""
    return max((len(name), i) for i, name in enumerate(FLOORS) if module == name or module.startswith(name + "."))[1]


def imports_up_a_floor(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((m, t) for m, targets in graph.items() for t in targets if floor(t) > floor(m))


def test_no_module_imports_one_of_a_higher_floor():
    graph = import_graph(with_type_checking_imports)
    assert {".".join(m.split(".")[:2]) for m in graph} - {"peftlab.__main__"} <= set(FLOORS)  # a new package: a floor
    assert "peftlab.cli.api" in graph["peftlab.cli.run"] and "peftlab.cli.api" in graph["peftlab"]
    assert imports_up_a_floor(graph) == []


def test_the_floor_check_finds_an_import_up_a_floor():
    graph = {"peftlab.utils.files": {"peftlab.cli.api.runs"}, "peftlab.cli.api.results": {"peftlab.cli.terminal"}}
    graph |= {"peftlab.cli.run": {"peftlab.cli.api"}, "peftlab.cli.api": {"peftlab"}}
    assert imports_up_a_floor(graph) == [
        ("peftlab.cli.api", "peftlab"),
        ("peftlab.cli.api.results", "peftlab.cli.terminal"),
        ("peftlab.utils.files", "peftlab.cli.api.runs"),
    ]

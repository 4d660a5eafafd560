"""The shape of the code, checked from its text (parsed with `ast`; nothing under src/ is imported):

* layering: every part of fastformers (a subpackage or a top-level module) has a rank, and a module imports only
  modules of its own part or of a lower rank: kernels <- ops <- layers <- ... <- models <- ... <- pipelines <- cli;
* no import cycles between modules;
* no module longer than 1,000 lines;
* nothing at the repository root shadows an installed distribution's package (`python -m pytest` and
  `python -m fastformers.bench` put the root first on sys.path), and every package under src/ is one the install ships.

An import counts wherever it is written: at module level, inside a function (a lazy import delays a dependency; it
does not remove it), or as a module name in a string (`register_lazy("triton", "fastformers.kernels.norm")`; a
logger's name is not one). A module imported through its parent package (`from .. import ops`) counts as that
module. Importing a module runs its parent packages' __init__ too; those implicit imports are not edges (every
package would otherwise be a cycle with its own modules).
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.metadata
import re
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
ROOT_PACKAGE = "fastformers"
MAX_LINES = 1000

# The rank of each part of fastformers. A module may import modules of its own part, or of a part with a lower rank;
# parts of equal rank do not import each other. A new part gets a rank here before its first import is accepted.
RANKS = {
    "kernels": 0,  # Triton kernels and their launchers; no knowledge of ops, layers or models
    "ops": 1,  # the seam: one function per op, which picks the backend (kernels / csrc / torch reference)
    "layers": 2,  # the nn.Modules models are made of, bound to their op implementations
    "quantization": 3,  # quantized weight formats and the methods that create and apply them
    "loading": 4,  # where bytes come from: hub files, safetensors, .bin, GGUF (packed GGUF weights via quantization)
    "configuration": 5,  # config.json <-> PretrainedConfig
    "outputs": 5,  # the ModelOutput containers models and generate return
    "tokenization": 5,  # text <-> ids; finds its files and reads GGUF vocabularies through loading
    "generation": 6,  # GenerationConfig, logits processors, KV caches, GenerationMixin (a base class of models)
    "modeling": 7,  # PreTrainedModel: from_pretrained / save_pretrained, weights into modules
    "models": 8,  # one file per architecture
    "auto": 9,  # model_type -> config and model classes (imports a model's module by name, when asked)
    "pipelines": 10,  # pipeline() and one file per task
    ROOT_PACKAGE: 11,  # fastformers/__init__.py: the public names
    "bench": 12,  # the benchmark suites (python -m fastformers.bench, fastformers bench): use every public name
    "cli": 13,  # the `fastformers` command, on top of everything (its `bench` subcommand runs the suites)
    "__main__": 14,  # python -m fastformers: runs the command
}

# Parts that only the parts named may import, whatever their rank: models never call a kernel directly (they call
# fastformers.ops), so the Triton kernels are reached through ops (and the layers that bind ops) alone.
ONLY_FROM = {"kernels": {"ops", "layers"}}

# Imports allowed against the layering, and import cycles allowed, each with its reason (none today). An entry whose
# import or cycle is gone fails the test, so that the lists only shrink.
UPWARD_EXCEPTIONS: dict = {}
CYCLE_EXCEPTIONS: dict = {}

# Modules allowed over MAX_LINES, each with the reason (none today).
LONG_MODULE_EXCEPTIONS: dict[str, str] = {}


class Import(NamedTuple):
    source: str
    target: str
    line: int
    how: str  # "module level", "lazy" (inside a function) or "by name" (a string)

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} (line {self.line}, {self.how})"


def discover_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package under src/."""
    modules = {}
    for path in sorted((SRC / ROOT_PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _inside_function(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return True
    return False


def _is_logger_name(node: ast.AST, parents: dict) -> bool:
    """`logging.getLogger("fastformers.ops")`: a logger's name, not an import."""
    call = parents.get(node)
    return (isinstance(call, ast.Call) and node in call.args
            and getattr(call.func, "attr", getattr(call.func, "id", None)) == "getLogger")


def module_imports(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """Every import of another fastformers module written in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def owner(dotted: str) -> str | None:
        """The module that `dotted` (a module, or a name inside one) belongs to."""
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [owner(alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else owner(base)
                       for alias in node.names]
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value
              and node.value in modules and not _is_logger_name(node, parents)):  # ("fastformers": a quant_method)
            targets = [node.value]
        how = ("by name" if isinstance(node, ast.Constant)
               else "lazy" if _inside_function(node, parents) else "module level")
        found += [Import(name, target, node.lineno, how) for target in targets if target and target != name]
    return list(dict.fromkeys(found))


def part_of(module: str) -> str:
    """`fastformers.ops.norm` -> "ops"; `fastformers.cli` -> "cli"; the package itself -> "fastformers"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT_PACKAGE


@pytest.fixture(scope="module")
def graph() -> dict[str, list[Import]]:
    modules = discover_modules()
    assert f"{ROOT_PACKAGE}.ops" in modules and f"{ROOT_PACKAGE}.models" in modules, "src/fastformers not found"
    return {name: module_imports(name, path, modules) for name, path in modules.items()}


def test_every_part_has_a_rank(graph):
    unranked = sorted({part_of(module) for module in graph} - set(RANKS))
    assert not unranked, f"give these parts of fastformers a rank in RANKS (tests/test_layering.py): {unranked}"


def layering_violations(graph: dict[str, list[Import]]) -> list[Import]:
    bad = []
    for imports in graph.values():
        for imp in imports:
            source, target = part_of(imp.source), part_of(imp.target)
            if source == target:
                continue
            if RANKS.get(target, -1) >= RANKS.get(source, -1) or source not in ONLY_FROM.get(target, {source}):
                bad.append(imp)
    return bad


def test_layering(graph):
    """kernels <- ops <- layers <- quantization <- loading <- configuration / outputs / tokenization <- generation
    <- modeling <- models <- auto <- pipelines <- fastformers <- cli: nothing imports upward or sideways."""
    bad = layering_violations(graph)
    unexpected = [f"{imp}: {part_of(imp.source)} (rank {RANKS.get(part_of(imp.source))}) may not import "
                  f"{part_of(imp.target)} (rank {RANKS.get(part_of(imp.target))})"
                  for imp in bad if (imp.source, imp.target) not in UPWARD_EXCEPTIONS]
    assert not unexpected, "imports against the layering:\n" + "\n".join(unexpected)
    stale = set(UPWARD_EXCEPTIONS) - {(imp.source, imp.target) for imp in bad}
    assert not stale, f"these UPWARD_EXCEPTIONS no longer happen; remove them from the list: {sorted(stale)}"


def strongly_connected_components(graph: dict[str, list[Import]]) -> list[set[str]]:
    """Tarjan's algorithm over the module graph (iterative, so that depth is no concern)."""
    index, low, on_stack, stack, components, counter = {}, {}, set(), [], [], [0]
    successors = {module: sorted({imp.target for imp in imports}) for module, imports in graph.items()}
    for start in successors:
        if start in index:
            continue
        work = [(start, iter(successors[start]))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    components.append(component)
            elif child not in index:
                index[child] = low[child] = counter[0]
                counter[0] += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(successors.get(child, []))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return components


def test_no_import_cycles(graph):
    cycles = [frozenset(c) for c in strongly_connected_components(graph) if len(c) > 1]
    unexpected = []
    for cycle in cycles:
        if cycle in CYCLE_EXCEPTIONS:
            continue
        ties = [str(imp) for module in sorted(cycle) for imp in graph[module] if imp.target in cycle]
        unexpected.append(f"{sorted(cycle)}:\n    " + "\n    ".join(ties))
    assert not unexpected, "modules that import each other (directly or through others):\n" + "\n".join(unexpected)
    stale = set(CYCLE_EXCEPTIONS) - set(cycles)
    assert not stale, f"these CYCLE_EXCEPTIONS are no longer cycles; remove them: {[sorted(c) for c in stale]}"


def test_the_checks_catch_what_they_should():
    """The rules above, on a made-up graph: an upward import, a sideways one, a kernel call from a model and a
    cycle are all found; a downward import is not."""
    def imp(source, target):
        return Import(f"fastformers.{source}", f"fastformers.{target}", 1, "module level")

    graph = {"fastformers.models.bert": [imp("models.bert", "ops.norm"), imp("models.bert", "kernels.norm"),
                                         imp("models.bert", "pipelines.base")],
             "fastformers.ops.norm": [imp("ops.norm", "kernels.norm")],
             "fastformers.tokenization.auto": [imp("tokenization.auto", "configuration")],
             "fastformers.layers.linear": [imp("layers.linear", "layers.norm")],
             "fastformers.layers.norm": [imp("layers.norm", "layers.linear")]}
    found = {(imp.source, imp.target) for imp in layering_violations(graph)}
    assert found == {("fastformers.models.bert", "fastformers.kernels.norm"),
                     ("fastformers.models.bert", "fastformers.pipelines.base"),
                     ("fastformers.tokenization.auto", "fastformers.configuration")}
    cycles = [c for c in strongly_connected_components(graph) if len(c) > 1]
    assert cycles == [{"fastformers.layers.linear", "fastformers.layers.norm"}]


def test_no_long_modules():
    lengths = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in discover_modules().items()}
    too_long = {name: n for name, n in lengths.items() if n > MAX_LINES and name not in LONG_MODULE_EXCEPTIONS}
    assert not too_long, f"modules over {MAX_LINES} lines (split them by what they do): {too_long}"


# ---------------------------------------------------------------------------------------------------------------
# The repository root and the install
# ---------------------------------------------------------------------------------------------------------------

def importable_names_at_root() -> set[str]:
    """What `import NAME` finds at the repository root: packages (folders with __init__.py) and modules."""
    suffixes = tuple(importlib.machinery.all_suffixes())
    names = {p.name for p in REPO.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    names |= {p.name.split(".")[0] for p in REPO.iterdir() if p.is_file() and p.name.endswith(suffixes)}
    return {name for name in names if name.isidentifier()}


def _normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def test_repository_root_shadows_no_installed_package():
    assert (REPO / "pyproject.toml").is_file(), f"not the repository root: {REPO}"
    names = importable_names_at_root()
    provided = importlib.metadata.packages_distributions()
    clashes = {name: dists for name in sorted(names)
               if (dists := [d for d in provided.get(name, []) if _normalized(d) != ROOT_PACKAGE])}
    assert not clashes, ("names at the repository root that hide an installed distribution's package when Python "
                         f"runs from the root (name: distributions): {clashes}")


def test_the_install_ships_every_package():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {".".join(p.parent.relative_to(SRC).parts) for p in (SRC / ROOT_PACKAGE).rglob("__init__.py")}
    assert packages <= listed, f"packages missing from [tool.setuptools] packages in pyproject.toml: " \
                               f"{sorted(packages - listed)}"

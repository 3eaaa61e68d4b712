"""Dependencies point one way, and every module imports on its own.

The library is layered: layers -> the models' core (tables, backbone, tasks, network, folding, statistics)
-> weights and presets -> the front door (`models.video_resnet`, `models.registry`); `data/` knows nothing of
models; the applications (the CLI, the study, the benchmarks, the tuner) use the library and the library never
uses them. The import statements are read from the source (those inside functions too), so an import put
inside a function to hide a cycle is found as well.
"""

import ast
import os
import subprocess
import sys

import keras_r21d

PACKAGE = os.path.dirname(keras_r21d.__file__)
APPLICATIONS = ("keras_r21d.cli", "keras_r21d.study", "keras_r21d.bench", "keras_r21d.tuning",
                "keras_r21d.__main__")
MODELS_CORE = ("keras_r21d.models.specs", "keras_r21d.models.backbone", "keras_r21d.models.classifier",
               "keras_r21d.models.network", "keras_r21d.models.legacy", "keras_r21d.models.fold",
               "keras_r21d.models.stats")
# Run as scripts, never imported: the CLI's entry, and torchvision's benchmark worker (torch and TensorFlow must not
# share a process; it imports its sibling _protocol.py from its own folder).
SCRIPTS = ("keras_r21d.__main__", "keras_r21d.bench._torch_worker")
# module prefix -> what it must never import
RULES = {
    "keras_r21d.layers": ("keras_r21d.models", "keras_r21d.weights", "keras_r21d.data", "keras_r21d.training",
                          "keras_r21d.export", "keras_r21d.serving", "keras_r21d.inference"),
    "keras_r21d.data": ("keras_r21d.layers", "keras_r21d.models", "keras_r21d.weights", "keras_r21d.training",
                        "keras_r21d.export", "keras_r21d.serving", "keras_r21d.inference"),
    **{core: ("keras_r21d.models.video_resnet", "keras_r21d.models.registry", "keras_r21d.weights",
              "keras_r21d.data", "keras_r21d.training", "keras_r21d.export", "keras_r21d.serving",
              "keras_r21d.inference") for core in MODELS_CORE},
    "keras_r21d.weights": ("keras_r21d.models.video_resnet", "keras_r21d.models.registry", "keras_r21d.training",
                           "keras_r21d.export", "keras_r21d.serving", "keras_r21d.inference"),
}


def _modules():
    modules = {}
    for folder, _, files in os.walk(PACKAGE):
        for file in files:
            if file.endswith(".py"):
                path = os.path.join(folder, file)
                name = os.path.relpath(path[:-3], os.path.dirname(PACKAGE)).replace(os.sep, ".")
                modules[name.removesuffix(".__init__")] = path
    return modules


MODULES = _modules()


def _imports(path):
    """The package modules a file imports, at any depth of its code (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("keras_r21d"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("keras_r21d"))
    return found & set(MODULES)


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _cycle():
    """One import cycle as a list of modules, or `None`."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(GRAPH[node]):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(GRAPH):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_there_is_no_import_cycle():
    assert _cycle() is None, " -> ".join(_cycle())


def test_the_checker_finds_a_cycle_and_a_wrong_way_import():
    GRAPH["keras_r21d.layers.utils"].add("keras_r21d.models.backbone")
    try:
        assert _cycle() is not None
        assert _wrong_way() == ["keras_r21d.layers.utils -> keras_r21d.models.backbone"]
    finally:
        GRAPH["keras_r21d.layers.utils"].discard("keras_r21d.models.backbone")


def _wrong_way():
    wrong = []
    for module, targets in sorted(GRAPH.items()):
        forbidden = [never for prefix, never in RULES.items() if module == prefix or module.startswith(prefix + ".")]
        if not module.startswith(APPLICATIONS):
            forbidden.append(APPLICATIONS)
        wrong += [f"{module} -> {target}" for target in sorted(targets)
                  if any(target == f or target.startswith(f + ".") for never in forbidden for f in never)]
    return wrong


def test_dependencies_point_one_way():
    assert _wrong_way() == []


def test_every_module_imports_on_its_own():
    """Each module imported alone (the package's modules cleared from `sys.modules` before each), in one child
    process: no module relies on another having been imported first."""
    names = sorted(name for name in MODULES if name not in SCRIPTS)
    script = (
        "import importlib, sys\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    for loaded in [m for m in sys.modules if m == 'keras_r21d' or m.startswith('keras_r21d.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as error:\n"
        "        failed.append(f'{name}: {type(error).__name__}: {error}')\n"
        "print('\\n'.join(failed) or 'ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script, *names], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout + result.stderr[-3000:]


def test_the_checker_reads_imports_inside_functions_too():
    source = open(MODULES["keras_r21d.inference"], encoding="utf-8").read()
    assert "        from keras_r21d.export.graph import" in source  # an import inside a method
    assert "keras_r21d.export.graph" in GRAPH["keras_r21d.inference"]

"""Every `>>>` example in the package's docstrings runs (keras-hub runs its docstrings the same way).

Examples that need a dataset, a video or a server say `# doctest: +SKIP`; the others run with `keras`, `np`
and `keras_r21d` in scope and must print what they show.
"""

import doctest
import importlib
import os

import keras
import numpy as np
import pytest

import keras_r21d

PACKAGE = os.path.dirname(os.path.abspath(keras_r21d.__file__))


def _modules_with_examples():
    names = []
    for folder, _, files in os.walk(PACKAGE):
        for file in sorted(files):
            if file.endswith(".py") and ">>>" in open(os.path.join(folder, file), encoding="utf-8").read():
                relative = os.path.relpath(os.path.join(folder, file), os.path.dirname(PACKAGE))[:-3]
                names.append(relative.replace(os.sep, ".").removesuffix(".__init__"))
    return sorted(names)


MODULES = _modules_with_examples()


def test_the_modules_with_examples_are_found():
    assert {"keras_r21d.models.fold", "keras_r21d.layers.blocks", "keras_r21d.models.video_resnet"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    globs = {**vars(module), "keras": keras, "np": np, "keras_r21d": keras_r21d}
    tests = [t for t in finder.find(module, name, globs=globs) if t.examples]
    assert tests, f"{name} has '>>>' but no example doctest finds"
    failures = []
    for test in tests:
        test.globs.update(globs)
        runner.run(test, out=failures.append)
    assert not failures, "".join(failures)

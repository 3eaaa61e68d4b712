"""Lazy package attributes (PEP 562): a package's public names are imported on first use.

So that `keras-r21d --help` (and any command that needs no model) imports
neither Keras nor TensorFlow, and `import keras_r21d.models.specs` costs
only that module.
"""

import importlib


def lazy_exports(package, exports):
    """`(__getattr__, __dir__)` for a package whose names live in submodules.

    Args:
        package: the package's `__name__`.
        exports: `{name: submodule}`: `name` is `submodule`'s attribute of that
            name, or the submodule itself when `name == submodule`.
    """

    def __getattr__(name):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        imported = importlib.import_module(f"{package}.{module}")
        value = imported if name == module else getattr(imported, name)
        globals_of_package = importlib.import_module(package).__dict__
        globals_of_package[name] = value
        return value

    def __dir__():
        return sorted(set(importlib.import_module(package).__dict__) | set(exports))

    return __getattr__, __dir__

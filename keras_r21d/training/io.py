"""Atomic writes: a file on disk is either the old one or the complete new one."""

import os

from keras_r21d._files import atomic_write_bytes, atomic_write_text  # noqa: F401 - their home is _files

TMP_PREFIX = ".tmp-"


def atomic_save_model(model, path):
    """`model.save(path)` through a temporary file (`.tmp-NAME-PID.keras`) and a rename."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f"{TMP_PREFIX}{name[:-len('.keras')]}-{os.getpid()}.keras")
    try:
        model.save(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)

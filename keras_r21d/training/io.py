"""Atomic writes: a file on disk is either the old one or the complete new one."""

import os


def _tmp(path):
    return f"{path}.tmp-{os.getpid()}"


def atomic_write_bytes(path, data):
    """Writes a file through a temporary file, fsync and a rename."""
    tmp = _tmp(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path, text):
    """Writes a UTF-8 text file through a temporary file, fsync and a rename."""
    atomic_write_bytes(path, text.encode("utf-8"))


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

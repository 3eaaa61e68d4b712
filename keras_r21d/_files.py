"""Files the package writes and checks: atomic writes (a file is the old one or the complete new one) and hashes.

Below every other module (it imports only the standard library): the data
layer, the weights and training all use it.
"""

import hashlib
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


def sha256_of(path):
    """The hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

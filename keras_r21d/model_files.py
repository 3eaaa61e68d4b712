"""Loading `.keras` files from untrusted sources: archive checks, then Keras' `safe_mode`.

A `.keras` file is a zip archive (`config.json`, `metadata.json`,
`model.weights.h5`). Before Keras reads it, the archive is checked: every
member name must be a plain relative path (no `..`, no absolute path), and
the sizes its members declare must stay within limits (a zip bomb declares
far more data than it stores). Keras then loads it with `safe_mode=True`,
which refuses `Lambda` layers and other arbitrary code. There is no switch
to turn `safe_mode` off.
"""

import os
import zipfile

# Larger than any network of the family (R(2+1)D-152 with its optimizer is under 1 GB).
MAX_ARCHIVE_BYTES = 4 * 1024**3
# Model weights compress little; a member expanding more than this is not a model file.
MAX_COMPRESSION_RATIO = 200
EXPECTED_MEMBERS = ("config.json", "metadata.json", "model.weights.h5")


class UnsafeModelFile(ValueError):
    """A model file that is refused before loading; the message names the file and the reason."""


def check_keras_archive(path, max_bytes=MAX_ARCHIVE_BYTES, max_ratio=MAX_COMPRESSION_RATIO):
    """Raises `UnsafeModelFile` naming `path` unless it is a plausible `.keras` archive."""
    if not zipfile.is_zipfile(path):
        raise UnsafeModelFile(f"{path}: not a .keras file (not a zip archive)")
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as error:
        raise UnsafeModelFile(f"{path}: unreadable zip archive ({error})") from None
    total = 0
    for member in members:
        name = member.filename
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":"):
            raise UnsafeModelFile(f"{path}: archive member {name!r} points outside the archive")
        total += member.file_size
        if total > max_bytes:
            raise UnsafeModelFile(f"{path}: archive members declare more than {max_bytes} bytes "
                                  f"(a zip bomb?); refused")
        if member.file_size > 1024**2 and member.file_size > max_ratio * max(member.compress_size, 1):
            raise UnsafeModelFile(f"{path}: archive member {name!r} expands {member.compress_size} bytes to "
                                  f"{member.file_size} (more than {max_ratio}x: a zip bomb?); refused")
    names = {member.filename for member in members}
    if "config.json" not in names:
        raise UnsafeModelFile(f"{path}: not a .keras file (no config.json in the archive)")


def load_keras_model(path, compile=False):
    """Loads a `.keras` file after `check_keras_archive`, with Keras' `safe_mode` on.

    `compile=False` (the default) leaves out the training configuration:
    evaluation, prediction, export and fine-tuning need none, and a file
    saved during training on another backend names that backend's optimizer
    class (PyTorch's, for a run trained on torch). Resuming a run passes
    `compile=True` to restore the optimizer.

    Raises `ValueError` naming the file for anything that is not a safe,
    loadable model.
    """
    import keras

    import keras_r21d.saving  # noqa: F401 - the package's Keras objects, registered

    if not os.path.isfile(path):
        raise ValueError(f"model file not found: {path}")
    check_keras_archive(path)
    try:
        return keras.models.load_model(path, safe_mode=True, compile=compile)
    except Exception as error:  # noqa: BLE001 - report any failure with the file's name
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(f"cannot load model {path}: {type(error).__name__}: {message}") from None

"""The package's own exceptions, importable without TensorFlow (the command line catches them by class)."""


class ExportError(RuntimeError):
    """An export that failed its parity check or could not be written."""


class ResumeError(RuntimeError):
    """A run cannot be resumed (missing or corrupt checkpoint); the message says which file."""

"""The package version: one place, read by `keras_r21d.__version__`, run records and setup.py."""

__version__ = "0.1.0"

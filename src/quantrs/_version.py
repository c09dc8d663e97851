# The single source of the version: pyproject.toml reads it (setuptools dynamic metadata), and
# `quantrs --version` prints it without importing importlib.metadata.
__version__ = "0.1.0"

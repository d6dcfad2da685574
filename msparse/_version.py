"""The package version, at the bottom layer so that any module can name it (msparse.__version__ re-exports it)."""
__version__ = "0.1.0"

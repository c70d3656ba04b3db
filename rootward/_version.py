"""The package version, read by `rootward version` and the build."""

__version__ = "0.1.0"

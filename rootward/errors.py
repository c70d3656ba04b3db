"""Errors of the house (configuration, startup). Each stage has its own tree in its package (e.g.
``rootward.receiver.errors``).

    RootwardError
    ├── ConfigError    a configuration file, variable or flag is invalid; the message names the key and source
    ├── StartupError   a server could not start (port in use, bad TLS files)
    └── StorageError   (rootward.storage) a database cannot be opened, read or written; the message names the file
"""

from __future__ import annotations


class RootwardError(Exception):
    """Base of Rootward's own errors."""


class ConfigError(RootwardError):
    """Invalid configuration; permanent until the configuration changes."""


class StartupError(RootwardError):
    """A component could not start."""

"""syschangemon's collection side: configuration, walk, hash, collectors, storage, CLI."""

__version__ = "2.0.0.dev0"

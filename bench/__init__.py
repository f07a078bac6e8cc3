"""Benchmarks of syschangemon against find, b3sum and AIDE (issue 8).

``python -m bench`` times the CLI on a synthetic /usr-like tree side by side with its
peers; ``python -m bench scaling`` shows how no-change collect, diff, memory and the
database grow with the tree; ``pytest bench/ --benchmark-enable`` runs the
micro-benchmarks. See bench/README.md.
"""

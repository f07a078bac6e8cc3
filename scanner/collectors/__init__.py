"""Collectors: each turns part of the host's state into items or stored records.

``file`` walks and hashes the filesystem; the others add ``command://``,
``sysinfo://`` items or login records. A collector the host cannot serve adds a
warning to the session instead of failing it.
"""

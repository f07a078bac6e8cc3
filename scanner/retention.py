"""Retention: keep the newest sessions and reports, drop what no kept session can see."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from scanner.chain import anchor
from scanner.schema import UNSENT_MAIL_STATES
from scanner.store import first_row, scalar, transaction

_DROP_SESSIONS = "DELETE FROM sessions WHERE id < $cutoff"
#: A version is visible to session S when since <= S < until; kept sessions are all >= cutoff.
_DROP_VERSIONS = "DELETE FROM versions WHERE until IS NOT NULL AND until <= $cutoff"
_DROP_CONTENTS = """
DELETE FROM contents WHERE digest NOT IN (
    SELECT content FROM versions WHERE content IS NOT NULL
    UNION SELECT stderr FROM versions WHERE stderr IS NOT NULL)
"""
#: Reports beyond the newest $keep, but never a pending one: an outage must not lose an
#: alert. Refused reports (bounced, never retried) are alerts nobody received, so they
#: outlive $keep too, but only the newest $keep of them: a server that refuses every
#: report for months must not fill the disk with them.
_DROP_REPORTS = f"""
DELETE FROM reports WHERE
    (coalesce(mail_state, 'none') NOT IN ({', '.join(map(repr, UNSENT_MAIL_STATES))})
     AND uuid NOT IN (SELECT uuid FROM reports ORDER BY created DESC LIMIT $keep))
 OR (mail_state = 'refused'
     AND uuid NOT IN (SELECT uuid FROM reports WHERE mail_state = 'refused' ORDER BY created DESC LIMIT $keep))
"""


@dataclass(frozen=True)
class CleanupResult:
    """How much a cleanup removed."""

    sessions: int
    versions: int
    reports: int


def cleanup(con: duckdb.DuckDBPyConnection, *, session_keep: int, report_keep: int) -> CleanupResult:
    """Keep the newest ``session_keep`` sessions and ``report_keep`` reports, in one transaction."""
    with transaction(con):
        row = first_row(con, "SELECT id FROM sessions ORDER BY id DESC LIMIT 1 OFFSET $skip",
                        {"skip": session_keep - 1})
        sessions = versions = 0
        if row is not None and scalar(con, "SELECT min(id) FROM sessions") < row[0]:
            cutoff = row[0]
            anchor(con, cutoff)  # before the rows older sessions left behind go
            sessions = scalar(con, _DROP_SESSIONS, {"cutoff": cutoff})
            versions = scalar(con, _DROP_VERSIONS, {"cutoff": cutoff})
            con.execute(_DROP_CONTENTS)
        reports = scalar(con, _DROP_REPORTS, {"keep": report_keep})
    if sessions or versions or reports:
        con.execute("CHECKPOINT")
    return CleanupResult(sessions, versions, reports)


def reset(con: duckdb.DuckDBPyConnection) -> int:
    """Drop every session and version (reports stay, as in the original); returns sessions dropped."""
    with transaction(con):
        dropped = scalar(con, "DELETE FROM sessions")
        con.execute("DELETE FROM versions")
        con.execute("DELETE FROM contents")
        con.execute("DELETE FROM meta WHERE key IN ('anchor_session', 'anchor_digest')")
    con.execute("CHECKPOINT")
    return dropped

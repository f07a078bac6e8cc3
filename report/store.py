"""Stored reports: the ``reports`` table (schema.REPORT_COLUMNS) holds each report's
model as JSON, so any format can be printed again later.

Mail delivery state lives in the same row: ``mail_state`` is pending (to be mailed),
sent, skipped (an empty report under --skip-empty-mail), refused (the server refused it
while taking other reports: not retried) or none (no mail configured);
``sent_at``, ``last_error`` and ``attempts`` are written by the mail side.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb
import orjson

from scanner.errors import NotFoundError
from scanner.schema import MAIL_STATES
from scanner.store import first_row


#: Report rows with the session UUIDs read from the model (the sessions may be gone).
_SELECT = """
SELECT uuid, old_session, new_session,
       json_extract_string(model, '$.sessions.old.uuid'),
       json_extract_string(model, '$.sessions.new.uuid'),
       created, is_empty, counts, mail_state, sent_at, last_error, attempts
FROM reports
"""
_INSERT = """
INSERT INTO reports (uuid, old_session, new_session, created, is_empty, counts, model,
                     mail_state, sent_at, last_error, attempts)
VALUES ($uuid, $old, $new, $created, $is_empty, $counts, $model, $mail_state, NULL, NULL, 0)
"""


@dataclass(frozen=True)
class ReportInfo:
    """A stored report as list-reports shows it (the model is loaded separately)."""

    uuid: str
    old_session: int
    new_session: int
    old_uuid: str
    new_uuid: str
    created: datetime
    is_empty: bool
    counts: dict
    mail_state: str
    sent_at: datetime | None
    last_error: str | None
    attempts: int


def _info(row: tuple) -> ReportInfo:
    values = list(row)
    values[7] = orjson.loads(values[7]) if values[7] else {}
    values[8] = values[8] or "none"
    values[11] = values[11] or 0
    return ReportInfo(*values)


def save_report(con: duckdb.DuckDBPyConnection, model: dict, *, mail_state: str) -> ReportInfo:
    """Store a report model (from report.model.build_model) with its mail state."""
    if mail_state not in MAIL_STATES:
        raise ValueError(f"mail_state must be one of {MAIL_STATES}, not {mail_state!r}")
    con.execute(_INSERT, {
        "uuid": model["uuid"], "old": model["sessions"]["old"]["id"],
        "new": model["sessions"]["new"]["id"],
        "created": datetime.fromisoformat(model["created_utc"]),
        "is_empty": model["is_empty"], "counts": orjson.dumps(model["counts"]).decode(),
        "model": orjson.dumps(model).decode(), "mail_state": mail_state})
    return _info(first_row(con, _SELECT + "WHERE uuid = $uuid", {"uuid": model["uuid"]}))


def list_reports(con: duckdb.DuckDBPyConnection) -> list[ReportInfo]:
    """All stored reports, oldest first."""
    return [_info(row) for row in con.execute(_SELECT + "ORDER BY created, uuid").fetchall()]


def find_report(con: duckdb.DuckDBPyConnection, uuid: str | None) -> ReportInfo:
    """The report named by ``uuid`` (a unique prefix works), or the newest one."""
    if uuid is None:
        row = first_row(con, _SELECT + "ORDER BY created DESC, uuid DESC LIMIT 1")
        if row is None:
            raise NotFoundError("no report stored yet; run 'syschangemon diff' (or run) "
                                "after two collects")
        return _info(row)
    rows = con.execute(_SELECT + "WHERE starts_with(uuid, $uuid) ORDER BY created",
                       {"uuid": uuid.lower()}).fetchall()
    if not rows:
        raise NotFoundError(f"no report with UUID {uuid}")
    if len(rows) > 1:
        raise NotFoundError(f"UUID prefix {uuid} names {len(rows)} reports; give more of it")
    return _info(rows[0])


#: The newest stored session that a stored report reached, else the oldest session.
_LAST_REPORTED = """
SELECT uuid FROM sessions
WHERE id = coalesce((SELECT max(new_session) FROM reports
                     WHERE new_session IN (SELECT id FROM sessions)),
                    (SELECT min(id) FROM sessions))
"""


def last_reported_session(con: duckdb.DuckDBPyConnection) -> str | None:
    """UUID of the newest session a stored report compared up to; when no stored report
    reaches a stored session (nothing reported since the baseline, or since a reset),
    the oldest stored session. None when no session is stored."""
    row = first_row(con, _LAST_REPORTED)
    return row[0] if row else None


def load_model(con: duckdb.DuckDBPyConnection, uuid: str) -> dict:
    """The stored model of the report ``uuid`` (exact UUID, as find_report returns it)."""
    row = first_row(con, "SELECT model FROM reports WHERE uuid = $uuid", {"uuid": uuid})
    if row is None:
        raise NotFoundError(f"no report with UUID {uuid}")
    return orjson.loads(row[0])

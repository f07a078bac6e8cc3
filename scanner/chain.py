"""Tamper-evident history: every session's digest chains the previous one.

A session's digest is BLAKE3(previous digest || digest of its change set || uuid),
where the change set is one line per version the session opened (``since = S``, with
all attributes) and closed (``until = S``), and its digest is BLAKE3 over the lines'
SHA-256 digests in sorted order. Computing it costs what the changes cost.
``cleanup`` drops old sessions; it first records an *anchor*: the same kind of digest
over the whole state at the oldest kept session, so the rows older sessions left
behind stay checked.
Reports print the newest digest (the chain head): a copy of a report kept off the host
shows whether history was rewritten afterwards. With a key file, the links are keyed
BLAKE3 (an HMAC), so nobody without the key can forge a consistent chain.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import blake3
import duckdb
import pyarrow as pa

from scanner.errors import ConfigError
from scanner.schema import ITEM_COLUMNS, quote
from scanner.store import first_row, scalar, set_meta


def _row_text() -> str:
    """One canonical line per item version: every attribute, NULL as \\N, blobs as hex."""
    parts = []
    for column in ITEM_COLUMNS:
        value = f"hex({quote(column.name)})" if column.sql == "BLOB" else f"CAST({quote(column.name)} AS VARCHAR)"
        parts.append(f"coalesce({value}, '\\N')")
    return "concat_ws(chr(31), " + ", ".join(parts) + ")"


# Each line is digested in SQL (SHA-256, in parallel) and only the digests, sorted,
# come to Python: a million-row baseline moves 32 MB instead of 250 MB of text, and
# sorting fixed-size digests is cheaper than sorting the lines.
CHANGE_SET_LINES = f"""
SELECT d FROM (
    SELECT unhex(sha256('+' || {_row_text()})) AS d FROM versions WHERE since = $session
    UNION ALL
    SELECT unhex(sha256('-' || url)) FROM versions WHERE until = $session)
ORDER BY d
"""
STATE_LINES = f"""
SELECT unhex(sha256({_row_text()})) AS d FROM versions
WHERE since <= $session AND (until IS NULL OR until > $session)
ORDER BY d
"""


def lines_digest(con: duckdb.DuckDBPyConnection, query: str, session_id: int) -> str:
    """BLAKE3 (hex) of the line digests a query returns, in its order."""
    hasher = blake3.blake3()
    # Arrow batches, not rows: a batch's digests lie end to end in one buffer, hashed
    # without a Python object per line (a 245,000-line baseline seal: 0.28 -> 0.24 s).
    # Read off the buffers rather than cast to binary(32): a cast imports
    # pyarrow.compute, 40-60 ms of a collect that needs nothing else from it.
    with con.sql(query, params={"session": session_id}).to_arrow_reader(65536) as reader:
        for batch in reader:
            digests = batch.column(0)
            _, offsets, data = digests.buffers()
            bounds = memoryview(offsets).cast("q" if pa.types.is_large_binary(digests.type) else "i")
            start, end = bounds[digests.offset], bounds[digests.offset + len(digests)]
            if end - start != 32 * len(digests):  # SHA-256: 32 bytes each, never NULL
                raise ValueError("line digests are not 32 bytes each")
            hasher.update(memoryview(data)[start:end])
    return hasher.hexdigest()


#: Version rows that belong to no kept session's change set: inserted behind our back.
ORPHAN_VERSIONS = """
SELECT count(*) FROM versions
WHERE (since >= $anchor AND since NOT IN (SELECT id FROM sessions))
   OR (until IS NOT NULL AND until NOT IN (SELECT id FROM sessions) AND until > $anchor)
"""


def chain_key(config) -> bytes | None:
    """The key from [storage] chain_key_file, or None when the chain is not keyed."""
    section = config.section("storage")
    return load_key(section.get("chain_key_file"), is_root=config.is_root,
                    where=section.where("chain_key_file"))


def load_key(path: str | None, *, is_root: bool, where: dict) -> bytes | None:
    """The 32-byte chain key derived from a root-only key file, or None without one."""
    if not path:
        return None
    try:
        info = os.stat(path)
        data = Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read key file: {error.strerror}", **where) from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO) or (is_root and info.st_uid != 0):
        raise ConfigError(f"{path}: key file must be private to root (mode 0600 or 0400)", **where)
    if len(data.strip()) < 16:
        raise ConfigError(f"{path}: key file holds fewer than 16 bytes", **where)
    return blake3.blake3(data.strip()).digest()


def link(previous: bytes | None, change_digest: str, session_uuid: str, key: bytes | None) -> bytes:
    """The digest of a session from its predecessor's digest and its change set."""
    hasher = blake3.blake3(key=key) if key else blake3.blake3()
    hasher.update(previous or b"")
    hasher.update(bytes.fromhex(change_digest))
    hasher.update(session_uuid.encode())
    return hasher.digest()


def seal(con: duckdb.DuckDBPyConnection, session_id: int, session_uuid: str,
         key: bytes | None) -> tuple[bytes, bytes | None]:
    """(digest, previous digest) of a session whose versions are written (inside its transaction)."""
    row = first_row(con, "SELECT digest FROM sessions WHERE id < ? ORDER BY id DESC LIMIT 1", [session_id])
    previous = row[0] if row else None
    change = lines_digest(con, CHANGE_SET_LINES, session_id)
    return link(previous, change, session_uuid, key), previous


def anchor(con: duckdb.DuckDBPyConnection, session_id: int) -> None:
    """Record the whole-state digest of ``session_id`` before older sessions are dropped."""
    digest = lines_digest(con, STATE_LINES, session_id)
    set_meta(con, {"anchor_session": str(session_id), "anchor_digest": digest})


@dataclass(frozen=True)
class VerifyResult:
    """What verify found: ok, or the first session whose stored items no longer match."""

    ok: bool
    sessions: int
    head: str | None
    problem: str | None = None


def verify(con: duckdb.DuckDBPyConnection, key: bytes | None) -> VerifyResult:
    """Recompute the chain from the anchor (or the first session) to the newest session."""
    meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
    sessions = con.execute("SELECT id, uuid, digest, prev_digest FROM sessions ORDER BY id").fetchall()
    if not sessions:
        return VerifyResult(True, 0, None)
    anchor_id = int(meta.get("anchor_session", sessions[0][0]))
    if "anchor_digest" in meta and lines_digest(con, STATE_LINES, anchor_id) != meta["anchor_digest"]:
        return VerifyResult(False, 0, None, f"the stored state at session {_uuid_of(sessions, anchor_id)} "
                            "(the oldest kept) no longer matches its recorded digest")
    orphans = scalar(con, ORPHAN_VERSIONS, {"anchor": anchor_id})
    if orphans:
        return VerifyResult(False, 0, None, f"{orphans} item versions belong to no stored session")
    bad = _bad_contents(con)
    if bad:
        return VerifyResult(False, 0, None, f"{bad} stored contents no longer match their digest")
    previous = None
    sealed = False
    for index, (session_id, uuid, digest, prev_digest) in enumerate(sessions):
        if digest is None and not sealed:
            continue  # written before this release sealed sessions: nothing to check
        sealed = True
        if session_id > anchor_id or "anchor_digest" not in meta:
            if index and prev_digest != previous:
                return VerifyResult(False, index, None, f"session {uuid}: link to the previous session broken")
            change = lines_digest(con, CHANGE_SET_LINES, session_id)
            if link(prev_digest, change, uuid, key) != digest:
                return VerifyResult(False, index, None,
                                    f"session {uuid}: stored items no longer match the session's digest")
        previous = digest
    return VerifyResult(True, len(sessions), previous.hex() if previous else None)


def _uuid_of(sessions: list[tuple], session_id: int) -> str:
    return next((uuid for sid, uuid, *_ in sessions if sid == session_id), str(session_id))


def _bad_contents(con: duckdb.DuckDBPyConnection) -> int:
    cursor = con.execute("SELECT digest, data FROM contents")
    bad = 0
    while rows := cursor.fetchmany(1000):
        bad += sum(1 for digest, data in rows if blake3.blake3(data).digest() != digest)
    return bad

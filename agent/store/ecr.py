"""The till's side of ECR links (issue 17): the SQL behind agent/ecr_link.py.

Written by the pipeline thread on the journal's connection, inside the transaction that handles the event,
so a request, the MATCH-004 alert it leads to and its outbox rows commit together.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime

from agent.store.schema import from_utc_text, utc_text
from drivers.events import EcrRequest


class EcrStore:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def add(self, request: EcrRequest, *, link: str, source: str, instant: datetime, received: datetime) -> int:
        cur = self.conn.execute(
            "INSERT INTO ecr_requests(link, source, state, time_utc, amount_minor, data, received)"
            " VALUES(?,?,?,?,?,?,?)",
            (link, source, request.state, utc_text(instant), request.amount_minor,
             json.dumps(request.to_dict(), ensure_ascii=False), utc_text(received)))
        return int(cur.lastrowid or 0)

    def recent(self, since: datetime) -> list[tuple[str, EcrRequest, datetime]]:
        """(link, request, received) of the till's own requests received from ``since`` on, oldest first:
        what a restart rebuilds the links from (the timeouts settleguard inferred are its own conclusions,
        drawn again if need be)."""
        rows = self.conn.execute("SELECT link, data, received FROM ecr_requests WHERE received>=? AND"
                                 " json_extract(data, '$.source')<>'settleguard' ORDER BY id",
                                 (utc_text(since),)).fetchall()
        return [(r["link"], EcrRequest.from_dict(json.loads(r["data"])), from_utc_text(r["received"]))
                for r in rows]

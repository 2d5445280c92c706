"""Every SQL statement of settleguard, over one SQLite file (the journal).

schema.py: tables, migrations, connections, the UTC text format. journal.py: the
pipeline's reads and writes. outbox.py: the delivery thread's side of the
outbox and the one INSERT into it. queries.py: read-only questions for the
CLI, doctor, metrics, evidence and replay.
"""

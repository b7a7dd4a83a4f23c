"""DDL for the buffer database, and the migrations from older layouts.

Bump SCHEMA_VERSION with any change and add the statements that bring version N-1 to N in
MIGRATIONS; ``open`` applies them in order inside one transaction.
"""

SCHEMA_VERSION = 3

DDL = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS events (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at    REAL    NOT NULL,
    event_name     TEXT    NOT NULL,
    transport_id   TEXT,
    snyk_timestamp TEXT,
    body_sha256    TEXT    NOT NULL,
    body           BLOB    NOT NULL
);

CREATE TABLE IF NOT EXISTS quarantine (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at    REAL    NOT NULL,
    event_name     TEXT    NOT NULL,
    transport_id   TEXT,
    snyk_timestamp TEXT,
    body_sha256    TEXT    NOT NULL,
    body           BLOB    NOT NULL,
    reason         TEXT    NOT NULL
);

CREATE TABLE IF NOT EXISTS dedup_keys (
    id       INTEGER PRIMARY KEY,
    seen_at  REAL    NOT NULL,
    key      BLOB    NOT NULL,
    event_id INTEGER
);
CREATE INDEX IF NOT EXISTS dedup_keys_seen_at ON dedup_keys (seen_at);

CREATE TABLE IF NOT EXISTS cursors (
    output       TEXT PRIMARY KEY,
    event_id     INTEGER NOT NULL,
    record_index INTEGER NOT NULL,
    delivered    INTEGER NOT NULL DEFAULT 0,
    updated_at   REAL    NOT NULL,
    last_error   TEXT,
    last_error_at REAL,
    paused       TEXT
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS dead_letters (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    output       TEXT    NOT NULL,
    record_id    TEXT    NOT NULL,
    event_id     INTEGER NOT NULL,
    record_index INTEGER NOT NULL,
    reason       TEXT    NOT NULL,
    attempts     INTEGER NOT NULL,
    failed_at    REAL    NOT NULL,
    message      BLOB    NOT NULL,
    time_ms      INTEGER NOT NULL DEFAULT 0,
    severity     TEXT,
    action       TEXT    NOT NULL DEFAULT 'introduced',
    document     BLOB
);
CREATE INDEX IF NOT EXISTS dead_letters_output ON dead_letters (output, failed_at);

CREATE TABLE IF NOT EXISTS replays (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    output       TEXT    NOT NULL,
    record_id    TEXT    NOT NULL,
    event_id     INTEGER NOT NULL,
    record_index INTEGER NOT NULL,
    time_ms      INTEGER NOT NULL,
    severity     TEXT,
    action       TEXT    NOT NULL,
    document     BLOB    NOT NULL,
    queued_at    REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS replays_output ON replays (output, id);
"""

MIGRATIONS: dict[int, tuple[str, ...]] = {
    3: (
        # transport ids and body hashes move to one append-only table (see buffer/dedup.py); the
        # keys are computed in Python while migrating (sqlite.py), then the old tables go
        "CREATE TABLE IF NOT EXISTS dedup_keys (id INTEGER PRIMARY KEY, seen_at REAL NOT NULL, key BLOB NOT NULL, "
        "event_id INTEGER)",
    ),
    2: (
        # dead letters keep the record itself, so `replay` can format it again for a fixed output
        "ALTER TABLE dead_letters ADD COLUMN time_ms INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE dead_letters ADD COLUMN severity TEXT",
        "ALTER TABLE dead_letters ADD COLUMN action TEXT NOT NULL DEFAULT 'introduced'",
        "ALTER TABLE dead_letters ADD COLUMN document BLOB",
        # the last failure per output, for `snyk-forwarder status` from another process
        "ALTER TABLE cursors ADD COLUMN last_error TEXT",
        "ALTER TABLE cursors ADD COLUMN last_error_at REAL",
        "ALTER TABLE cursors ADD COLUMN paused TEXT",
    ),
}

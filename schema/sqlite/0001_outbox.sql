-- hxlog outbox, version 1. Shipped migrations are never edited: add a new file.

-- Facts about this outbox file (outbox_id, created_at).
CREATE TABLE outbox_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- One row per sample, in the order taken. seq is AUTOINCREMENT so a number is
-- never reused, even after pruning: sink cursors stay valid.
CREATE TABLE samples (
    seq                INTEGER PRIMARY KEY AUTOINCREMENT,
    id                 BLOB    NOT NULL UNIQUE CHECK (length(id) = 16), -- UUIDv7, the idempotency key
    device_id          TEXT    NOT NULL,
    taken_at_us        INTEGER NOT NULL,                               -- microseconds since 1970, UTC
    source             TEXT    NOT NULL CHECK (source IN ('w1', 'mock')),
    readings           TEXT    NOT NULL,                               -- JSON array of readings
    hot_effectiveness  REAL,
    cold_effectiveness REAL,
    effectiveness      REAL,
    lmtd               REAL
) STRICT;

CREATE INDEX samples_taken_at ON samples (taken_at_us);

-- Per-sink delivery state: every sample with seq <= delivered_seq has been
-- durably accepted by the sink.
CREATE TABLE sinks (
    name             TEXT PRIMARY KEY,
    delivered_seq    INTEGER NOT NULL DEFAULT 0,
    delivered_count  INTEGER NOT NULL DEFAULT 0,
    last_success_us  INTEGER,
    last_error       TEXT,
    last_error_class TEXT,
    last_error_us    INTEGER,
    backoff_until_us INTEGER,
    rejected_count   INTEGER NOT NULL DEFAULT 0
) STRICT;

-- Samples a sink refused outright (e.g. HTTP 400): recorded, not retried.
CREATE TABLE rejected (
    sink      TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    reason    TEXT    NOT NULL,
    at_us     INTEGER NOT NULL,
    PRIMARY KEY (sink, seq)
) STRICT;

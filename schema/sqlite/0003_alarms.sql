-- hxlog outbox: sensor alarms and sink error counts (issue 12). Shipped
-- migrations are never edited: add a new file.

-- Every alarm raised or cleared, in the order it happened. The state of an
-- alarm is its newest event. seq is AUTOINCREMENT so a sink's alarm cursor
-- stays valid.
CREATE TABLE alarm_events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           BLOB    NOT NULL UNIQUE,     -- UUIDv7, the idempotency key
    device_id    TEXT    NOT NULL,
    alarm        TEXT    NOT NULL,            -- max, min, missing, effectiveness
    role         TEXT    NOT NULL,            -- '' for effectiveness
    raised       INTEGER NOT NULL CHECK (raised IN (0, 1)),
    at_us        INTEGER NOT NULL,            -- taken_at of the deciding sample
    value        REAL,
    threshold    REAL,
    message      TEXT    NOT NULL
) STRICT;

CREATE INDEX alarm_events_key ON alarm_events (alarm, role, seq);

-- Alarm events delivered to a sink (only Web PubSub publishes them).
ALTER TABLE sinks ADD COLUMN alarm_seq INTEGER NOT NULL DEFAULT 0;

-- Failures recorded per sink and class (a failure is recorded when the
-- sink's error state changes, plus every refused batch), for /metrics.
CREATE TABLE sink_errors (
    sink  TEXT    NOT NULL,
    class TEXT    NOT NULL,
    count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (sink, class)
) STRICT;

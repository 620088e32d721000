-- hxlog PostgreSQL schema, version 1. Shipped migrations are never edited: add a new file.
-- One row per sample; many devices (a fleet) write into the same table.

CREATE TABLE samples (
    sample_id          uuid             PRIMARY KEY,         -- the outbox's idempotency key (UUIDv7)
    device_id          text             NOT NULL,
    taken_at           timestamptz      NOT NULL,
    source             text             NOT NULL CHECK (source IN ('w1', 'mock')),
    -- the four standard roles, °C; NULL when the reading is missing (see the *_quality column)
    t1                 double precision,                     -- hot inlet
    t2                 double precision,                     -- hot outlet
    t3                 double precision,                     -- cold inlet
    t4                 double precision,                     -- cold outlet
    t1_quality         text,                                 -- ok, not_found, crc_no, crc_mismatch, empty, garbage, ...
    t2_quality         text,                                 -- NULL when the role is not mapped
    t3_quality         text,
    t4_quality         text,
    -- every role (including extra ones) with sensor id, quality and reason
    readings           jsonb            NOT NULL,
    hot_effectiveness  double precision,                     -- (T1-T2)/(T1-T3), a fraction
    cold_effectiveness double precision,                     -- (T4-T3)/(T1-T3), a fraction
    effectiveness      double precision,                     -- the larger of the two
    lmtd               double precision,                     -- counter-flow LMTD, kelvin
    received_at        timestamptz      NOT NULL DEFAULT now()
);

-- "T1 of device hx-01 over the last 7 days"
CREATE INDEX samples_device_taken_at ON samples (device_id, taken_at);

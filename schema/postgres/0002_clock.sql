-- hxlog PostgreSQL schema: trustworthy time (issue 10). Shipped migrations are never edited: add a new file.
-- A sample taken before the device's clock was synchronised arrives as
-- 'unsynced'; once its time is corrected it is sent again and its row updated
-- in place (taken_at and clock; taken_at_raw keeps the time first recorded).
-- Rows written before this migration count as 'synced'.

ALTER TABLE samples
    ADD COLUMN clock        text        NOT NULL DEFAULT 'synced'
        CHECK (clock IN ('synced', 'unsynced', 'corrected')),
    ADD COLUMN taken_at_raw timestamptz,            -- the device's wall time at sampling, when corrected since
    ADD COLUMN boot_id      text,                   -- the device's boot (/proc/sys/kernel/random/boot_id)
    ADD COLUMN boottime_us  bigint;                 -- CLOCK_BOOTTIME at sampling, microseconds

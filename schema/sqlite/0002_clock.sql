-- hxlog outbox: trustworthy time (issue 10). Shipped migrations are never edited: add a new file.

-- The clock a sample was taken with. Samples stored before this migration
-- count as synced: nothing better is known about them.
ALTER TABLE samples ADD COLUMN clock TEXT NOT NULL DEFAULT 'synced'
    CHECK (clock IN ('synced', 'unsynced', 'corrected'));
ALTER TABLE samples ADD COLUMN boot_id TEXT;              -- /proc/sys/kernel/random/boot_id
ALTER TABLE samples ADD COLUMN boottime_us INTEGER;       -- CLOCK_BOOTTIME at sampling
ALTER TABLE samples ADD COLUMN taken_at_raw_us INTEGER;   -- the wall time first recorded, once corrected

-- Finding a boot's unsynced samples when its clock synchronises.
CREATE INDEX samples_unsynced ON samples (boot_id) WHERE clock = 'unsynced';

-- Wall = boottime + offset_us, per boot, from the first synchronised
-- observation of that boot (kept so a restart within the boot still corrects).
CREATE TABLE clock_anchors (
    boot_id      TEXT    PRIMARY KEY,
    offset_us    INTEGER NOT NULL,
    synced_at_us INTEGER NOT NULL
) STRICT;

-- Samples whose taken_at changed after they were stored (corrected), in the
-- order it happened: a sink that already received the old version gets the
-- sample again. rev is AUTOINCREMENT so a sink's revised_rev stays valid.
CREATE TABLE revisions (
    rev INTEGER PRIMARY KEY AUTOINCREMENT,
    seq INTEGER NOT NULL
) STRICT;

ALTER TABLE sinks ADD COLUMN revised_rev INTEGER NOT NULL DEFAULT 0;

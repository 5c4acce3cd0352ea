-- difo's embedded backend: the same places as Redis, as rows.
-- Every unit is one row in `units`; its `place` says where it is (exactly one place):
--   queue     waiting in `queue`, popped in `position` order (lowest first)
--   schedule  waiting for its time (`score`)
--   retry     failed, waiting for its next attempt (`score`)
--   dead      out of retries, refused, or a poison pill (`score` = time of death)
--   inflight  claimed by process `owner` under `ref` (`started` once known to have started)
--   staging   being moved by process `owner` (promotion, orphan recovery) under `ref`
CREATE TABLE IF NOT EXISTS difo_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS units (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    place TEXT NOT NULL,
    queue TEXT NOT NULL DEFAULT '',
    position INTEGER,
    score REAL,
    owner TEXT,
    ref TEXT,
    started INTEGER NOT NULL DEFAULT 0,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS units_queue ON units (place, queue, position);
CREATE INDEX IF NOT EXISTS units_score ON units (place, score);
CREATE INDEX IF NOT EXISTS units_owner ON units (owner, ref);

-- Sidekiq's `queues` set: every queue name ever pushed to (until cleared).
CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY
);

-- Counters: stat:processed, stat:failed and their per-day keys, as in Redis.
CREATE TABLE IF NOT EXISTS stats (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL,
    expires_at REAL
);

-- Sidekiq's process records (the `processes` set and each IDENTITY hash).
CREATE TABLE IF NOT EXISTS processes (
    identity TEXT PRIMARY KEY,
    info BLOB NOT NULL,
    busy INTEGER NOT NULL,
    beat REAL NOT NULL,
    quiet TEXT NOT NULL,
    rss INTEGER NOT NULL,
    rtt_us INTEGER NOT NULL,
    concurrency INTEGER NOT NULL,
    work TEXT NOT NULL,
    expires_at REAL NOT NULL,
    stopping TEXT NOT NULL DEFAULT 'false'
);

-- difo's liveness beats (the Redis difo:beats zset).
CREATE TABLE IF NOT EXISTS beats (
    identity TEXT PRIMARY KEY,
    beat REAL NOT NULL
);

-- Signals sent to a process (Sidekiq's IDENTITY-signals list).
CREATE TABLE IF NOT EXISTS signals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    identity TEXT NOT NULL,
    signal TEXT NOT NULL,
    expires_at REAL NOT NULL
);

-- Periodic units: the last tick fired per name.
CREATE TABLE IF NOT EXISTS periodic (
    name TEXT PRIMARY KEY,
    tick REAL NOT NULL
);

-- Paused queues (difo pause): claims skip them.
CREATE TABLE IF NOT EXISTS paused (
    name TEXT PRIMARY KEY
);

-- Per-function run metrics, the fields of Redis's difo:metrics:MINUTE hashes as rows:
-- `minute` is `YYYYMMDD|HH:MM` (UTC), or '' for the all-time totals (no expiry).
CREATE TABLE IF NOT EXISTS metrics (
    minute TEXT NOT NULL,
    field TEXT NOT NULL,
    value REAL NOT NULL,
    expires_at REAL,
    PRIMARY KEY (minute, field)
);

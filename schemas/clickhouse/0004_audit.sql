-- The audit log, mirrored from the audit topic by the sink: one row per
-- record, every field of the record in its own column, so that
-- `switchyard audit verify --from clickhouse` recomputes each record's hash
-- from what the table holds (an altered row no longer matches its hash or
-- its HMAC). `at` keeps the record's exact RFC 3339 text (the hash covers
-- it); `at_time` is the same instant for queries. `kafka_partition` and
-- `kafka_offset` say where the record was on the topic: the order a chain
-- is checked in, and what a finding names. Kept forever (no TTL).

CREATE TABLE IF NOT EXISTS audit_log
(
    writer String,
    seq UInt64,
    prev_hash String,
    at String,
    at_time DateTime('UTC'),
    kind String,
    subject String,
    node Nullable(String),
    principal Nullable(String),
    outcome String,
    detail String,
    hash String,
    hmac String,
    kafka_partition Int32,
    kafka_offset Int64
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(at_time)
ORDER BY (writer, seq);

-- Each writer's checkpoints (its latest sequence number and hash); the
-- highest seq per writer is the one a verification checks against.
CREATE TABLE IF NOT EXISTS audit_checkpoints
(
    writer String,
    seq UInt64,
    hash String,
    at String
)
ENGINE = ReplacingMergeTree()
ORDER BY (writer, seq);

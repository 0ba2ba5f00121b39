-- One row per billed provider attempt, as the analytics sink reads it from the
-- usage topic. Applied by the sink at start (tracked in schema_migrations).
--
-- Engine: ReplacingMergeTree keyed on the org path, the day and event_id. A usage
-- event re-delivered by Kafka keeps its event_id, so copies collapse on merge and
-- `FROM usage_events FINAL` never counts one twice. The sink itself never inserts a
-- Kafka offset twice (it skips offsets ClickHouse already has), so copies only come
-- from producers that published an event twice.
--
-- Ordering: org → business_unit → team → project → day serves the common
-- questions (one org node over a time range); event_id last makes the key unique.
-- Monthly partitions keep old months cheap to drop or re-aggregate.
--
-- Types: DateTime (seconds, UTC) for ts plus ts_ms for the exact millisecond;
-- money is Float64 USD (the column says the unit); no LowCardinality or
-- DateTime64, so the same DDL runs on ClickHouse 18.16 and on current releases.
CREATE TABLE IF NOT EXISTS usage_events
(
    event_id String,
    job_id String,
    batch_id String,
    attempt UInt32,
    ts DateTime('UTC'),
    ts_ms UInt64,
    day Date,
    org String,
    business_unit String,
    team String,
    project String,
    workload String,
    strategy String,
    category String,
    complexity Float64,
    chosen_model String,
    routing_reason String,
    provider String,
    model String,
    deployment String,
    outcome String,
    input_tokens UInt64,
    output_tokens UInt64,
    cached_input_tokens UInt64,
    cost_usd Float64,
    baseline_cost_usd Float64,
    latency_ms UInt64,
    kafka_topic String,
    kafka_partition Int32,
    kafka_offset Int64,
    inserted_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (org, business_unit, team, project, day, event_id)
SETTINGS index_granularity = 8192;

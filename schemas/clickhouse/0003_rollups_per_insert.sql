-- The rollup views aggregate each insert before writing it, and a small table
-- keeps the highest Kafka offset per partition.
--
-- Rollups: the views of 0002 wrote one rollup row per usage event, so every
-- insert wrote its rows three times. Grouped by the rollup key, an insert of
-- 100,000 events writes a few hundred rollup rows. The sums are the same
-- (SummingMergeTree adds rows with equal keys either way).
--
-- ClickHouse 18.16 replaces a column named like an alias of the same SELECT
-- by that alias, so `sum(cost_usd) AS cost_usd` cannot also feed
-- `failed_cost_usd`. The failed attempts' cost is therefore a MATERIALIZED
-- column of usage_events, computed on insert, which the view sums.
--
-- usage_offsets: the sink learns what ClickHouse holds per partition (after a
-- restart or a rebalance) from this table, not by scanning usage_events. Its
-- view writes max(kafka_offset) per insert; ReplacingMergeTree keeps the
-- highest on merge, and the sink reads max(max_offset).
--
-- Upgrading: the old views are dropped and the new ones created; rows
-- inserted in between by another sink would miss the rollups, so stop the
-- other sinks while the first one applies this migration.

ALTER TABLE usage_events ADD COLUMN failed_cost_usd Float64 MATERIALIZED if(outcome != 'succeeded', cost_usd, 0.);

DROP TABLE IF EXISTS usage_hourly_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_hourly_mv TO usage_hourly AS
SELECT
    toStartOfHour(ts) AS hour,
    org,
    business_unit,
    team,
    project,
    provider,
    model,
    strategy,
    count() AS attempts,
    sum(toUInt64(outcome = 'succeeded')) AS succeeded_attempts,
    sum(toUInt64(outcome != 'succeeded')) AS failed_attempts,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_input_tokens) AS cached_input_tokens,
    sum(cost_usd) AS cost_usd,
    sum(failed_cost_usd) AS failed_cost_usd,
    sum(baseline_cost_usd) AS baseline_cost_usd,
    sum(latency_ms) AS latency_ms_sum
FROM usage_events
GROUP BY hour, org, business_unit, team, project, provider, model, strategy;

DROP TABLE IF EXISTS usage_daily_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_daily_mv TO usage_daily AS
SELECT
    day,
    org,
    business_unit,
    team,
    project,
    provider,
    model,
    strategy,
    count() AS attempts,
    sum(toUInt64(outcome = 'succeeded')) AS succeeded_attempts,
    sum(toUInt64(outcome != 'succeeded')) AS failed_attempts,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_input_tokens) AS cached_input_tokens,
    sum(cost_usd) AS cost_usd,
    sum(failed_cost_usd) AS failed_cost_usd,
    sum(baseline_cost_usd) AS baseline_cost_usd,
    sum(latency_ms) AS latency_ms_sum
FROM usage_events
GROUP BY day, org, business_unit, team, project, provider, model, strategy;

CREATE TABLE IF NOT EXISTS usage_offsets
(
    kafka_topic String,
    kafka_partition Int32,
    max_offset Int64
)
ENGINE = ReplacingMergeTree(max_offset)
ORDER BY (kafka_topic, kafka_partition);

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_offsets_mv TO usage_offsets AS
SELECT kafka_topic, kafka_partition, max(kafka_offset) AS max_offset
FROM usage_events
GROUP BY kafka_topic, kafka_partition;

INSERT INTO usage_offsets
SELECT kafka_topic, kafka_partition, max(kafka_offset) AS max_offset
FROM usage_events
GROUP BY kafka_topic, kafka_partition;

-- Hourly and daily rollups per org node, provider, model and strategy, fed by
-- materialized views on every insert into usage_events.
--
-- Engine: SummingMergeTree over the listed counters; rows with the same key are
-- added together on merge, so queries must still `sum()` and GROUP BY. The sink
-- inserts every Kafka offset into usage_events exactly once (it asks ClickHouse
-- which offsets it already has before inserting), so re-delivery never reaches
-- the views twice. An event a producer published twice (same event_id, two
-- offsets) is dropped by the sink's recent-id window; one that slips past it is
-- summed twice here, while `usage_events FINAL` collapses it.
--
-- Columns: attempts (billed attempts), failed_attempts and failed_cost_usd
-- (outcome other than succeeded), succeeded_attempts (one per succeeded job),
-- token counts, cost and the flagship baseline cost in USD, latency_ms_sum.
CREATE TABLE IF NOT EXISTS usage_hourly
(
    hour DateTime('UTC'),
    org String,
    business_unit String,
    team String,
    project String,
    provider String,
    model String,
    strategy String,
    attempts UInt64,
    succeeded_attempts UInt64,
    failed_attempts UInt64,
    input_tokens UInt64,
    output_tokens UInt64,
    cached_input_tokens UInt64,
    cost_usd Float64,
    failed_cost_usd Float64,
    baseline_cost_usd Float64,
    latency_ms_sum UInt64
)
ENGINE = SummingMergeTree((attempts, succeeded_attempts, failed_attempts, input_tokens, output_tokens, cached_input_tokens, cost_usd, failed_cost_usd, baseline_cost_usd, latency_ms_sum))
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, org, business_unit, team, project, provider, model, strategy);

CREATE TABLE IF NOT EXISTS usage_daily
(
    day Date,
    org String,
    business_unit String,
    team String,
    project String,
    provider String,
    model String,
    strategy String,
    attempts UInt64,
    succeeded_attempts UInt64,
    failed_attempts UInt64,
    input_tokens UInt64,
    output_tokens UInt64,
    cached_input_tokens UInt64,
    cost_usd Float64,
    failed_cost_usd Float64,
    baseline_cost_usd Float64,
    latency_ms_sum UInt64
)
ENGINE = SummingMergeTree((attempts, succeeded_attempts, failed_attempts, input_tokens, output_tokens, cached_input_tokens, cost_usd, failed_cost_usd, baseline_cost_usd, latency_ms_sum))
PARTITION BY toYYYYMM(day)
ORDER BY (day, org, business_unit, team, project, provider, model, strategy);

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
    toUInt64(1) AS attempts,
    toUInt64(outcome = 'succeeded') AS succeeded_attempts,
    toUInt64(outcome != 'succeeded') AS failed_attempts,
    input_tokens,
    output_tokens,
    cached_input_tokens,
    cost_usd,
    if(outcome != 'succeeded', cost_usd, 0.) AS failed_cost_usd,
    baseline_cost_usd,
    latency_ms AS latency_ms_sum
FROM usage_events;

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
    toUInt64(1) AS attempts,
    toUInt64(outcome = 'succeeded') AS succeeded_attempts,
    toUInt64(outcome != 'succeeded') AS failed_attempts,
    input_tokens,
    output_tokens,
    cached_input_tokens,
    cost_usd,
    if(outcome != 'succeeded', cost_usd, 0.) AS failed_cost_usd,
    baseline_cost_usd,
    latency_ms AS latency_ms_sum
FROM usage_events;

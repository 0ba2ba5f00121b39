-- Columns for deferred routing and the cache-write price.
--
-- cache_write_input_tokens: prompt tokens written to the provider's cache,
-- billed at the catalog's cache-write price (Anthropic's 5-minute writes cost
-- 1.25 times input). Rows inserted before read 0; their input_tokens include
-- the writes, as usage events counted them then.
--
-- mode: `live`, or `deferred` when the attempt went through a provider's
-- batch API; cost_usd is then the batch price. Rows inserted before read
-- `live`, which they were.
--
-- live_cost_usd: what the same tokens cost on the same model live. Rows
-- inserted before take cost_usd (they were live). Reports split the savings
-- against the flagship: routing saved baseline_cost_usd - live_cost_usd,
-- deferral saved live_cost_usd - cost_usd.
--
-- Plain String, not LowCardinality, so the same DDL runs on ClickHouse 18.16
-- and on current releases; the rollups are unchanged (reports that split the
-- savings read usage_events). One column per statement: 18.16 has no
-- ADD COLUMN IF NOT EXISTS, so the sink checks system.columns before each.

ALTER TABLE usage_events ADD COLUMN cache_write_input_tokens UInt64 DEFAULT 0;

ALTER TABLE usage_events ADD COLUMN mode String DEFAULT 'live';

ALTER TABLE usage_events ADD COLUMN live_cost_usd Float64 DEFAULT cost_usd;

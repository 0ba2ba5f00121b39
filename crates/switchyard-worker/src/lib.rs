//! The routing worker. [`Engine`] turns one job into its outcome (policy, analysis,
//! budget, routing, provider calls with retry and failover, result and usage
//! events) without any Kafka; [`run`] is the Kafka side: consumer group, bounded
//! concurrency, at-least-once commits, dead letters and graceful drain.

mod cancellations;
mod catch_up;
mod dispatch;
mod engine;
mod ledger;
pub mod metrics;
mod runner;

pub use engine::{Engine, EngineError, HealthTable, Outcome, now_ms};
pub use metrics::Metrics;
pub use runner::{RunReport, WorkerError, run};

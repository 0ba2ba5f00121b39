//! The routing worker. [`Engine`] turns one job into its outcome in three steps
//! (admit, dispatch, settle) without any Kafka; [`run`] is the Kafka side:
//! consumer group, bounded concurrency, at-least-once commits, dead letters and
//! graceful drain; [`telemetry::register`] exposes its counters, live state and
//! readiness on a telemetry endpoint; [`alerts`] watches budgets, quotas,
//! deployments and dead letters and publishes each crossing.

mod access;
pub mod alerts;
mod audit;
mod cancellations;
mod dispatch;
mod engine;
mod health;
mod ledger;
pub mod metrics;
mod runner;
pub mod telemetry;

pub use access::Envelope;
pub use engine::{Engine, EngineError, HANDOFF_KEPT, Outcome, now_ms};
pub use health::HealthTable;
pub use metrics::{Metrics, MetricsSnapshot};
pub use runner::{RunReport, WorkerError, run};

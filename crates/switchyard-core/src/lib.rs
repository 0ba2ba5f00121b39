//! Switchyard's domain, free of I/O: the job, result and usage-event records; the
//! model catalog and the org tree with its policies; task analysis; the five routing
//! strategies with feasibility filters; live deployment health (EWMA latency, error
//! rate, circuit breaker); the budget ledger; and the alert record workers
//! publish and the sink delivers. Everything here is data and pure
//! functions, tested without a runtime; Kafka, HTTP and storage live in other crates.

pub mod access;
pub mod admission;
pub mod alert;
pub mod analysis;
pub mod audit;
pub mod backoff;
pub mod batch;
pub mod budget;
pub mod catalog;
pub mod config;
pub mod deferred;
pub mod health;
pub mod job;
pub mod org;
pub mod result;
pub mod routing;
pub mod tokens;
pub mod usage;
pub mod vocab;

pub use analysis::{TaskAnalysis, TaskAnalyzer, TaskCategory};
pub use catalog::{Catalog, ModelSpec};
pub use job::{ChatMessage, ChatRequest, Job, ResponseFormat, Role};
pub use org::{EffectivePolicy, OrgTree};
pub use result::{
    Attempt, AttemptOutcome, ErrorInfo, JobResult, JobStatus, Output, RoutingSummary, TokenUsage,
};
pub use routing::{Router, RoutingDecision, Strategy};
pub use usage::UsageEvent;

//! Telemetry for Switchyard's processes: the Prometheus text exposition format
//! (families with `# HELP` and `# TYPE`, escaped labels, histograms as
//! `_bucket{le=…}`, `_sum` and `_count`), lock-free histograms for hot paths,
//! the process basics every process exposes, and the HTTP endpoint that serves
//! `GET /metrics`, `GET /healthz` and `GET /readyz` from a [`Telemetry`]: the
//! renderers and readiness checks that the worker and the sink register.
//! Rendering is pure text; only [`MetricsServer`] does I/O.

mod exposition;
mod histogram;
mod process;
mod registry;
mod server;

pub use exposition::{
    CONTENT_TYPE, Family, MetricType, escape_help, escape_label_value, format_value,
    is_valid_label_name, is_valid_metric_name,
};
pub use histogram::DurationHistogram;
pub use process::ProcessInfo;
pub use registry::{ReadinessCheck, Renderer, Telemetry, Unready};
pub use server::{MetricsServer, parse_addr};

/// Why the telemetry endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address is not `IP:PORT`.
    #[error(
        "`{addr}` is not a socket address; write IP:PORT, such as 127.0.0.1:9464, or 0.0.0.0:9464 to listen on every interface (port 0 picks a free one)"
    )]
    InvalidAddr {
        /// What was given.
        addr: String,
    },
    /// Binding the listening socket failed (port taken, no permission).
    #[error("cannot listen for metrics on {addr}: {source}; choose another address or port")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The system's reason.
        source: std::io::Error,
    },
}

/// This crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

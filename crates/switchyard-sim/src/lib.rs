//! Simulated LLM providers for demos, integration tests and benchmarks.
//!
//! [`start`] (or [`serve_until`], for the `switchyard sim-provider` command) serves
//! the OpenAI Chat Completions, Anthropic Messages and Gemini generateContent wire
//! formats on a local port, faithfully enough that the real HTTP adapters talk to
//! it unchanged, with per-model latency, injected errors, rate limits (enforced
//! over a sliding window), hangs and outages described by a [`SimConfig`]. Token
//! usage and reply text are pure functions of the prompt ([`usage_for`],
//! [`reply_for`]), so tests can check costs exactly; injected faults come from
//! seeded per-request rolls, so runs are reproducible. [`InProcessProvider`]
//! gives the same answers without a network. The OpenAI Files and Batches and
//! Anthropic Message Batches endpoints are served too (create, retrieve, list,
//! results, cancel), with a configurable processing time, lines that fail or
//! expire, and a slow create ([`BatchBehaviour`]); [`SimStats`] counts every
//! prompt that reached the simulator twice, live or in a batch.

mod admission;
mod batch;
mod config;
pub mod hostile;
mod in_process;
mod server;
mod stats;
mod synthesis;
mod window;
mod wire;

use std::net::SocketAddr;

use switchyard_core::config::ConfigError;

pub use config::{
    BatchBehaviour, ModelBehaviour, Outage, OutputTokens, RATE_WINDOW, RateLimitHint, Setting,
    SimConfig,
};
pub use in_process::InProcessProvider;
pub use server::{SimHandle, serve_until, start};
pub use stats::{BatchStats, ModelStats, SimStats};
pub use synthesis::{
    BYTES_PER_TOKEN, CACHE_BLOCK_TOKENS, CACHE_MIN_SYSTEM_BYTES, FinishReason, MAX_OUTPUT_TOKENS,
    MIN_OUTPUT_TOKENS, PER_MESSAGE_TOKENS, Reply, ReplyStyle, reply_for, reply_for_request,
    reply_of_length, usage_for, usage_for_request,
};

/// Why the simulator could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The config file is unreadable or invalid; the message names the file, line and fix.
    #[error("invalid simulator config: {0}")]
    Config(#[from] ConfigError),
    /// The listening address is taken or not allowed.
    #[error("cannot listen on {addr}: {source}; choose a free port (port 0 picks one)")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP server failed while running.
    #[error("the simulator's HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    /// The server task panicked or was cancelled.
    #[error("the simulator's server task ended abnormally: {0}")]
    Task(String),
}

/// The crate's result type.
pub type Result<T, E = SimError> = std::result::Result<T, E>;

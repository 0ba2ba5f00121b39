//! The pipeline config (`pipelines/*.toml`): Kafka, topics and encodings, worker
//! limits, routing settings, deployments, analytics. Parsed with every key checked,
//! then validated as a whole (deployments name catalog models, the baseline model
//! exists, Avro topics have schema ids) before anything connects.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::access::{AccessConfig, AuditConfig, read_keys};
use super::alerts::AlertsConfig;
use super::source::{self, ConfigError, ConfigSource, Invalid, KeyPath};
use crate::analysis::need::NeedModel;
use crate::catalog::Catalog;
use crate::config::source::ReadFile;
use crate::health::HealthConfig;
use crate::org::OrgTree;
use crate::vocab::Strategy;

/// Encoding of a topic's values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encoding {
    /// UTF-8 JSON.
    #[default]
    Json,
    /// Avro with the Confluent wire format: magic byte 0, 4-byte schema id, datum.
    AvroConfluent,
    /// Avro single-object encoding: C3 01, 8-byte schema fingerprint, datum.
    AvroSingleObject,
}

/// What to do with unknown fields in a JSON job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownFields {
    /// Dead-letter the job (catches producer typos).
    #[default]
    Reject,
    /// Drop them silently (lets producers add fields first).
    Ignore,
}

/// How records produced to a topic are compressed. Consumers need the codec's
/// library: librdkafka-based clients (kcat, confluent-kafka) have all of them;
/// Python's aiokafka needs `pip install aiokafka[lz4]` (or `[zstd]`, `[snappy]`)
/// for anything but gzip and none; Java clients have all of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// No compression: every consumer reads it.
    None,
    /// gzip: readable everywhere, the most CPU.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4 (the default): cheap on CPU; aiokafka needs its `lz4` extra.
    #[default]
    Lz4,
    /// Zstandard: the best ratio; aiokafka needs its `zstd` extra.
    Zstd,
}

impl Compression {
    /// librdkafka's name for it (`compression.type`).
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// One topic and its encoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// Topic name.
    pub name: String,
    /// Value encoding.
    #[serde(default)]
    pub encoding: Encoding,
    /// Schema id written in (and required of) Confluent-framed Avro messages.
    #[serde(default)]
    pub schema_id: Option<u32>,
    /// Unknown JSON fields policy (jobs topic).
    #[serde(default)]
    pub unknown_fields: UnknownFields,
    /// Largest accepted message, bytes; larger ones are dead-lettered.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// How records Switchyard produces to this topic are compressed (dead
    /// letters and held copies follow the jobs topic's setting).
    #[serde(default)]
    pub compression: Compression,
}

fn default_max_message_bytes() -> usize {
    1 << 20
}

impl TopicConfig {
    /// A JSON topic with defaults.
    pub fn json(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            encoding: Encoding::Json,
            schema_id: None,
            unknown_fields: UnknownFields::Reject,
            max_message_bytes: default_max_message_bytes(),
            compression: Compression::Lz4,
        }
    }
}

/// Topic names and encodings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topics {
    /// Prompt jobs.
    pub jobs: TopicConfig,
    /// Results, keyed by job id.
    pub results: TopicConfig,
    /// Usage events, one per billed attempt.
    pub usage: TopicConfig,
    /// Dead letters: original bytes, reason in headers.
    pub dlq: String,
    /// Jobs held by budget policy until approved.
    pub held: String,
    /// Batch registry (compacted).
    pub batches: String,
    /// Budget and quota snapshots of every worker (compacted, keyed by worker
    /// instance and node).
    pub budgets: String,
    /// Alerts, one record per crossing (keyed by kind, node, threshold and period).
    pub alerts: String,
    /// Approval requests and signed decisions (compacted).
    pub approvals: String,
    /// The audit log: every writer's chain of HMAC'd records.
    pub audit: String,
    /// Each audit writer's latest sequence number and hash (compacted), so that
    /// a cut tail is detected.
    pub audit_checkpoints: String,
    /// Deferred jobs and the provider batches they wait on (compacted; jobs
    /// keyed by job id, provider batches by their idempotency key).
    pub deferred: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            jobs: TopicConfig::json("switchyard.jobs"),
            results: TopicConfig::json("switchyard.results"),
            usage: TopicConfig::json("switchyard.usage"),
            dlq: "switchyard.jobs.dlq".into(),
            held: "switchyard.jobs.held".into(),
            batches: "switchyard.batches".into(),
            budgets: "switchyard.budgets".into(),
            alerts: "switchyard.alerts".into(),
            approvals: "switchyard.approvals".into(),
            audit: "switchyard.audit".into(),
            audit_checkpoints: "switchyard.audit.checkpoints".into(),
            deferred: "switchyard.deferred".into(),
        }
    }
}

/// librdkafka's properties that hold secrets (marked sensitive in its
/// configuration reference), the only ones `kafka.client_secret_env` takes.
pub const KAFKA_SECRET_PROPERTIES: &[&str] = &[
    "sasl.password",
    "sasl.oauthbearer.assertion.private.key.passphrase",
    "sasl.oauthbearer.assertion.private.key.pem",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.config",
    "ssl.key.password",
    "ssl.key.pem",
    "ssl.keystore.password",
];

/// Kafka connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// Consumer group of the routing workers.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Topics.
    #[serde(default)]
    pub topics: Topics,
    /// Extra librdkafka properties (security.protocol, sasl.*, …), applied to every client.
    #[serde(default)]
    pub client: BTreeMap<String, String>,
    /// librdkafka properties whose values are secrets, each read from the
    /// environment variable named here when a client is made (for example
    /// `"sasl.password" = "KAFKA_SASL_PASSWORD"`), so that they are never
    /// written in a config file.
    #[serde(default)]
    pub client_secret_env: BTreeMap<String, String>,
}

fn default_group() -> String {
    "switchyard-workers".into()
}

/// Worker limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Jobs in flight at once (provider calls take seconds, so hundreds).
    pub max_in_flight: usize,
    /// Time given to in-flight jobs on SIGINT/SIGTERM before the worker exits.
    #[serde(with = "humantime_serde")]
    pub drain_grace: Duration,
    /// How often finished offsets are committed.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Name in logs and metrics; defaults to the host name.
    pub worker_id: Option<String>,
    /// Longest text copied from a job into its result or dead letter (project,
    /// metadata values, messages that quote the input); longer text is cut and
    /// the result's metadata says so (`switchyard.truncated`).
    pub max_echo_bytes: usize,
    /// Offsets of one partition held between its commit point and the newest
    /// message taken; at this many the worker pauses that partition instead of
    /// growing.
    pub max_pending_offsets: usize,
    /// Time the in-flight jobs of a partition taken away in a rebalance get to
    /// finish and be committed; the rest are abandoned without a result (the
    /// partition's new owner runs them).
    #[serde(with = "humantime_serde")]
    pub revoke_grace: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 512,
            drain_grace: Duration::from_secs(30),
            commit_interval: Duration::from_millis(100),
            worker_id: None,
            max_echo_bytes: 1024,
            max_pending_offsets: 10_000,
            revoke_grace: Duration::from_secs(10),
        }
    }
}

/// Retry policy per deployment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts on one deployment before failing over (1 = no retry).
    pub attempts_per_deployment: u32,
    /// First backoff; doubles per retry, with full jitter.
    #[serde(with = "humantime_serde")]
    pub base_backoff: Duration,
    /// Longest backoff.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Longest wait a provider may ask for (Retry-After, rate-limit resets)
    /// that a job waits out on the same deployment; a longer one sends the job
    /// to the next deployment of its chain at once.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts_per_deployment: 3,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(20),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// Routing settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Strategy when neither job nor org policy names one.
    pub default_strategy: Strategy,
    /// Quality floor when the org policy sets none.
    pub default_quality_floor: f64,
    /// Share of the flagship's quality (0..1) that `auto` keeps when the org
    /// policy sets no `quality_target`: it picks the threshold on the learned
    /// need above which a job goes to a top-third model.
    pub default_quality_target: f64,
    /// A need model file trained by `switchyard train-router` (relative to this
    /// file); without it, the model compiled into the binary.
    pub need_model: Option<PathBuf>,
    /// Model whose prices define the "everything on the flagship" baseline.
    pub baseline_model: String,
    /// Longest routing chain.
    pub max_chain: usize,
    /// Quality slack for balanced, latency-first and availability-first.
    pub quality_slack: f64,
    /// Circuit breaker and statistics.
    pub health: HealthConfig,
    /// Retries.
    pub retry: RetryConfig,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            default_strategy: Strategy::Auto,
            default_quality_floor: 0.5,
            default_quality_target: crate::analysis::DEFAULT_QUALITY_TARGET,
            need_model: None,
            baseline_model: "claude-opus-5-5".into(),
            max_chain: 4,
            quality_slack: 0.08,
            health: HealthConfig::default(),
            retry: RetryConfig::default(),
        }
    }
}

/// Timeouts of one deployment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// TCP + TLS connect.
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    /// From sending the request to the response headers.
    #[serde(with = "humantime_serde")]
    pub first_byte: Duration,
    /// Whole call.
    #[serde(with = "humantime_serde")]
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(60),
            total: Duration::from_secs(180),
        }
    }
}

/// Where and how a catalog model is called.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    /// Unique name (appears in results and analytics).
    pub name: String,
    /// Catalog model served.
    pub model: String,
    /// API base URL; defaults to the provider's public endpoint.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Environment variable holding the API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// File holding the API key (for mounted secrets).
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// Requests per minute the provider allows this key.
    #[serde(default)]
    pub rpm: Option<u32>,
    /// Tokens per minute the provider allows this key.
    #[serde(default)]
    pub tpm: Option<u32>,
    /// This worker's share of the limits when several workers use the key (0..1].
    #[serde(default = "one")]
    pub share: f64,
    /// The window `rpm` and `tpm` count over: one minute unless the provider's
    /// limit is stated per another period (some hosts limit per second).
    #[serde(default = "one_minute", with = "humantime_serde")]
    pub limit_window: Duration,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Overrides the model id sent to the API (for self-hosted names).
    #[serde(default)]
    pub api_model: Option<String>,
    /// Allows a plain `http://` base URL to a host other than this machine
    /// with a key. Off by default: the key would cross the network in clear.
    #[serde(default)]
    pub allow_insecure: bool,
}

fn one() -> f64 {
    1.0
}

fn one_minute() -> Duration {
    Duration::from_secs(60)
}

/// Analytics sink settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// Consumer group of the sink.
    pub group_id: String,
    /// Root of the Parquet tree (`day=…/org=…/part-….parquet`).
    pub parquet_dir: PathBuf,
    /// ClickHouse HTTP URL; empty disables ClickHouse.
    pub clickhouse_url: Option<String>,
    /// ClickHouse database.
    pub clickhouse_database: String,
    /// ClickHouse user.
    pub clickhouse_user: Option<String>,
    /// Environment variable with the ClickHouse password.
    pub clickhouse_password_env: Option<String>,
    /// Flush (and commit) at least this often.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Flush when this many events are buffered.
    pub flush_max_events: usize,
    /// Start a new Parquet file past this size.
    pub parquet_max_file_bytes: u64,
    /// Close the open Parquet files (making them visible and their offsets
    /// committable) at least this often.
    #[serde(with = "humantime_serde")]
    pub parquet_roll_interval: Duration,
    /// Names this sink's Parquet files and manifest; defaults to `group_id`. Give
    /// every sink that writes into the same `parquet_dir` its own id.
    pub sink_id: Option<String>,
    /// Events held for ClickHouse while it is unreachable; at this bound the sink
    /// stops consuming (nothing is dropped) until ClickHouse catches up.
    pub clickhouse_max_pending_events: usize,
    /// Longest wait for one ClickHouse request before it counts as failed.
    #[serde(with = "humantime_serde")]
    pub clickhouse_timeout: Duration,
    /// Longest pause between retries while ClickHouse is failing (backoff doubles up to it).
    #[serde(with = "humantime_serde")]
    pub clickhouse_max_backoff: Duration,
    /// The sink's own dead-letter topic: a message on the usage topic that is
    /// not a usage event goes here (original key and bytes, the reason, kind,
    /// source topic, partition and offset in headers) before its offset is
    /// committed, so no spend is skipped without a trace.
    pub dlq_topic: String,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            group_id: "switchyard-analytics".into(),
            parquet_dir: PathBuf::from("data/usage"),
            clickhouse_url: None,
            clickhouse_database: "switchyard".into(),
            clickhouse_user: None,
            clickhouse_password_env: None,
            flush_interval: Duration::from_secs(5),
            flush_max_events: 100_000,
            parquet_max_file_bytes: 128 << 20,
            parquet_roll_interval: Duration::from_secs(60),
            sink_id: None,
            clickhouse_max_pending_events: 1_000_000,
            clickhouse_timeout: Duration::from_secs(30),
            clickhouse_max_backoff: Duration::from_secs(30),
            dlq_topic: "switchyard.usage.dlq".into(),
        }
    }
}

/// Telemetry of the processes that run the pipeline (`run`, `sink`, `dev`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObservabilityConfig {
    /// Where the process serves Prometheus metrics (`GET /metrics`) and its
    /// health and readiness probes (`GET /healthz`, `GET /readyz`), as
    /// `IP:PORT`: `127.0.0.1:9464` for this machine only, `0.0.0.0:9464` on
    /// every interface, port 0 for any free port (the process prints the one
    /// it bound). Unset: no endpoint. `--metrics-addr` overrides it.
    pub metrics_addr: Option<String>,
}

/// The whole pipeline config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Kafka.
    pub kafka: KafkaConfig,
    /// Worker limits.
    #[serde(default)]
    pub worker: WorkerConfig,
    /// Routing.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// Model catalog file, relative to this file.
    #[serde(default = "default_catalog")]
    pub catalog: PathBuf,
    /// Org file, relative to this file.
    #[serde(default = "default_org")]
    pub org: PathBuf,
    /// Deployments.
    #[serde(default)]
    pub deployments: Vec<DeploymentConfig>,
    /// Analytics.
    #[serde(default)]
    pub analytics: AnalyticsConfig,
    /// Who may spend and decide: keys, signed jobs, approvals. Without this
    /// section the pipeline runs open (anyone who can write to the jobs topic
    /// may claim any project), and says so when it starts.
    #[serde(default)]
    pub access: Option<AccessConfig>,
    /// The audit log.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Metrics and probes.
    #[serde(default)]
    pub observability: ObservabilityConfig,
    /// Alert delivery (by the usage sink).
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// Deferred routing through the providers' batch APIs.
    #[serde(default)]
    pub deferred: DeferredConfig,
}

/// Deferred routing: how deferred jobs are gathered into provider batches,
/// polled and planned for (`[deferred]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeferredConfig {
    /// How long deferred jobs for one deployment gather before their provider
    /// batch is created (sooner when the batch is full or a job's deadline
    /// needs it).
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// How often an open provider batch is polled; after a failed poll the
    /// pause grows on the shared backoff, up to `max_poll_backoff`.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Longest pause between polls after errors.
    #[serde(with = "humantime_serde")]
    pub max_poll_backoff: Duration,
    /// The completion window asked of the provider (OpenAI accepts only
    /// "24h"; Anthropic's is 24 h) and planned for by routing.
    #[serde(with = "humantime_serde")]
    pub completion_window: Duration,
    /// Room kept beyond `max_wait` and the completion window: `auto` defers a
    /// job only when its deadline leaves all three, so that a line the
    /// provider fails can still fail over live in time.
    #[serde(with = "humantime_serde")]
    pub margin: Duration,
    /// Longest one attempt to create a provider batch (upload included) may
    /// take. A worker that takes over a batch whose creation it did not see
    /// finish waits this long past the attempt, then adopts the provider's
    /// batch if it exists, or creates it: so a batch is never created twice.
    #[serde(with = "humantime_serde")]
    pub submit_timeout: Duration,
    /// Most requests in one provider batch (OpenAI takes 50,000, Anthropic
    /// 100,000; each batch's record lists its job ids, so keep it well below).
    pub max_requests: usize,
    /// Most bytes of requests in one provider batch (OpenAI's input file may
    /// hold 200 MB, Anthropic's batch 256 MB).
    pub max_bytes: usize,
}

impl Default for DeferredConfig {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_secs(600),
            poll_interval: Duration::from_secs(60),
            max_poll_backoff: Duration::from_secs(600),
            completion_window: Duration::from_secs(24 * 3600),
            margin: Duration::from_secs(3600),
            submit_timeout: Duration::from_secs(120),
            max_requests: 10_000,
            max_bytes: 100 << 20,
        }
    }
}

impl DeferredConfig {
    /// How long a job must be able to wait to be deferred: gathering, the
    /// provider's window and the margin.
    pub fn needed_delay(&self) -> Duration {
        self.max_wait + self.completion_window + self.margin
    }
}

fn default_catalog() -> PathBuf {
    PathBuf::from("models.toml")
}

fn default_org() -> PathBuf {
    PathBuf::from("org.toml")
}

/// A pipeline config with its catalog and org tree, validated together.
#[derive(Debug, Clone)]
pub struct LoadedPipeline {
    /// The config.
    pub config: PipelineConfig,
    /// The catalog it points to.
    pub catalog: Catalog,
    /// The org tree it points to.
    pub org: OrgTree,
    /// The keys of `[access] keys_file` (empty when the file does not exist
    /// yet); `None` without `[access]`.
    pub keys: Option<crate::access::Keyring>,
    /// The need model `auto` routes with: the built-in one, or the file of
    /// `routing.need_model` (which the loader reads).
    pub need_model: Arc<NeedModel>,
    /// The config file's path.
    pub path: PathBuf,
}

impl PipelineConfig {
    /// Parses, validates and resolves a pipeline config (`text`, read from
    /// `path`) with its catalog and org file, which `files` reads: from disk at
    /// the edges (`switchyard-loader`), from memory in tests and for the
    /// configuration compiled into the binary. `env` holds the overrides
    /// (`SWITCHYARD__SECTION__KEY=value`).
    pub fn parse(
        path: &Path,
        text: &str,
        env: &[(String, String)],
        files: &dyn ReadFile,
    ) -> Result<LoadedPipeline, ConfigError> {
        let (mut config, source): (PipelineConfig, ConfigSource) = source::parse(path, text, env)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        config.catalog = dir.join(&config.catalog);
        config.org = dir.join(&config.org);
        if let Some(access) = &mut config.access {
            access.keys_file = dir.join(&access.keys_file);
        }
        if let Some(key_file) = &mut config.audit.key_file {
            *key_file = dir.join(&*key_file);
        }
        if let Some(model) = &mut config.routing.need_model {
            *model = dir.join(&*model);
        }
        let catalog_text = files.read(&config.catalog).map_err(|e| ConfigError {
            origin: config.catalog.display().to_string(),
            line: None,
            key: "(file)".into(),
            problem: format!("cannot read the model catalog: {e}"),
            fix: "check the `catalog` path in the pipeline config (relative paths are resolved from the config file's directory)".into(),
        })?;
        let catalog = Catalog::parse(&config.catalog, &catalog_text)?;
        let org_text = files.read(&config.org).map_err(|e| ConfigError {
            origin: config.org.display().to_string(),
            line: None,
            key: "(file)".into(),
            problem: format!("cannot read the org file: {e}"),
            fix: "check the `org` path in the pipeline config".into(),
        })?;
        let org = OrgTree::parse(
            &config.org,
            &org_text,
            &catalog,
            config.routing.default_strategy,
            config.routing.default_quality_floor,
        )?;
        config.validate(&catalog).map_err(|e| source.locate(e))?;
        if config.access.is_none()
            && let Some(node) = org
                .nodes()
                .into_iter()
                .find(|n| org.policy(&n.path, None).is_ok_and(|p| p.require_signed))
        {
            return Err(source.locate(Invalid::new(
                KeyPath::root().key("access"),
                format!("`{}` requires signed jobs, but there is no [access] section to check signatures with", node.path),
                "add [access] with keys_file = \"keys.toml\" (and create keys with `switchyard keys create`)",
            )));
        }
        let keys = match &config.access {
            None => None,
            Some(access) => Some(read_keys(&access.keys_file, files)?),
        };
        let need_model = NeedModel::builtin().map_err(|e| ConfigError {
            origin: "the built-in need model".into(),
            line: None,
            key: "routing.need_model".into(),
            problem: e.to_string(),
            fix: "rebuild Switchyard, or set routing.need_model to a model file".into(),
        })?;
        Ok(LoadedPipeline {
            config,
            catalog,
            org,
            keys,
            need_model,
            path: path.to_owned(),
        })
    }

    /// Cross-checks against the catalog; no I/O.
    pub fn validate(&self, catalog: &Catalog) -> Result<(), Invalid> {
        self.validate_kafka()?;
        self.validate_routing(catalog)?;
        self.validate_deferred()?;
        self.observability.validate()?;
        self.alerts.validate(&KeyPath::root().key("alerts"))?;
        let root = KeyPath::root();
        let mut names = std::collections::HashSet::new();
        for (i, d) in self.deployments.iter().enumerate() {
            let at = root.key("deployments").index(i);
            if !names.insert(d.name.as_str()) {
                return Err(Invalid::new(
                    at.key("name"),
                    format!("deployment `{}` is defined twice", d.name),
                    "give each deployment a unique name",
                ));
            }
            d.validate(&at, catalog)?;
        }
        if let Err(e) = crate::audit::Redactor::new(&self.audit.redact) {
            return Err(Invalid::new(
                root.key("audit").key("redact"),
                format!("a pattern does not compile: {e}"),
                "write regular expressions in the syntax of Rust's regex crate",
            ));
        }
        if self.deployments.is_empty() {
            return Err(Invalid::new(
                root.key("deployments"),
                "no deployments",
                "add at least one [[deployments]] entry naming a catalog model",
            ));
        }
        Ok(())
    }

    /// Brokers, topics and the secret properties taken from the environment.
    fn validate_kafka(&self) -> Result<(), Invalid> {
        let root = KeyPath::root();
        if self.kafka.brokers.trim().is_empty() {
            return Err(Invalid::new(
                root.key("kafka").key("brokers"),
                "no brokers given",
                "set kafka.brokers = \"host:9092\" or SWITCHYARD_BROKERS",
            ));
        }
        let topics = &self.kafka.topics;
        for (key, t) in [
            ("jobs", &topics.jobs),
            ("results", &topics.results),
            ("usage", &topics.usage),
        ] {
            let at = root.key("kafka").key("topics").key(key);
            if t.name.is_empty() {
                return Err(Invalid::new(
                    at.key("name"),
                    "topic name is empty",
                    "give the topic a name",
                ));
            }
            if t.encoding == Encoding::AvroConfluent && t.schema_id.is_none() {
                return Err(Invalid::new(
                    at.key("encoding"),
                    "Confluent Avro needs a schema id",
                    "add schema_id = <id registered for schemas/*.avsc>",
                ));
            }
            if t.max_message_bytes < 1024 {
                return Err(Invalid::new(
                    at.key("max_message_bytes"),
                    format!("{} bytes is too small for any job", t.max_message_bytes),
                    "use at least 1024",
                ));
            }
        }
        for property in self.kafka.client.keys() {
            if KAFKA_SECRET_PROPERTIES.contains(&property.as_str()) {
                return Err(Invalid::new(
                    root.key("kafka").key("client").key(property),
                    format!("`{property}` is a secret and may not be written in the config file"),
                    format!(
                        "remove it here and name the environment variable that holds it: [kafka.client_secret_env] \"{property}\" = \"KAFKA_SECRET\""
                    ),
                ));
            }
        }
        for (property, var) in &self.kafka.client_secret_env {
            let at = root.key("kafka").key("client_secret_env").key(property);
            // Only librdkafka's secret properties: a misspelt name would make
            // librdkafka refuse the config with the value in its message.
            if !KAFKA_SECRET_PROPERTIES.contains(&property.as_str()) {
                return Err(Invalid::new(
                    at,
                    format!("`{property}` is not one of librdkafka's secret properties"),
                    format!(
                        "use one of {}; other properties go in kafka.client",
                        KAFKA_SECRET_PROPERTIES.join(", ")
                    ),
                ));
            }
            if self.kafka.client.contains_key(property) {
                return Err(Invalid::new(
                    at,
                    format!("`{property}` is also set in kafka.client"),
                    "keep the secret only in client_secret_env and remove it from kafka.client",
                ));
            }
            if var.trim().is_empty() {
                return Err(Invalid::new(
                    at,
                    "the environment variable name is empty",
                    "name the variable that holds the value, e.g. KAFKA_SASL_PASSWORD",
                ));
            }
        }
        Ok(())
    }

    /// The `[deferred]` settings.
    fn validate_deferred(&self) -> Result<(), Invalid> {
        let d = &self.deferred;
        let at = |k: &str| KeyPath::root().key("deferred").key(k);
        for (key, value) in [
            ("max_wait", d.max_wait),
            ("poll_interval", d.poll_interval),
            ("completion_window", d.completion_window),
            ("submit_timeout", d.submit_timeout),
        ] {
            if value.is_zero() {
                return Err(Invalid::new(
                    at(key),
                    "a duration of 0 cannot be planned with",
                    "give a positive duration, such as \"10m\"",
                ));
            }
        }
        if d.max_poll_backoff < d.poll_interval {
            return Err(Invalid::new(
                at("max_poll_backoff"),
                "the longest pause after errors is shorter than the poll interval",
                "make max_poll_backoff at least poll_interval",
            ));
        }
        if d.max_requests == 0 || d.max_requests > 100_000 {
            return Err(Invalid::new(
                at("max_requests"),
                format!(
                    "{} requests per provider batch is outside 1..=100000",
                    d.max_requests
                ),
                "give at most the provider's limit (OpenAI 50,000, Anthropic 100,000), such as 10000",
            ));
        }
        if d.max_bytes < 1 << 20 {
            return Err(Invalid::new(
                at("max_bytes"),
                format!("{} bytes is too small for a provider batch", d.max_bytes),
                "give at least 1048576 (OpenAI takes 200 MB, Anthropic 256 MB)",
            ));
        }
        Ok(())
    }

    /// Worker limits and routing settings.
    fn validate_routing(&self, catalog: &Catalog) -> Result<(), Invalid> {
        let root = KeyPath::root();
        if self.worker.max_in_flight == 0 {
            return Err(Invalid::new(
                root.key("worker").key("max_in_flight"),
                "0 jobs in flight would never run anything",
                "use a positive number, such as 512",
            ));
        }
        if catalog.get(&self.routing.baseline_model).is_none() {
            return Err(Invalid::new(
                root.key("routing").key("baseline_model"),
                format!(
                    "baseline model `{}` is not in the catalog",
                    self.routing.baseline_model
                ),
                format!("use one of: {}", catalog.names().join(", ")),
            ));
        }
        if !(0.0..=1.0).contains(&self.routing.default_quality_target) {
            return Err(Invalid::new(
                root.key("routing").key("default_quality_target"),
                format!(
                    "quality target {} is outside 0..1",
                    self.routing.default_quality_target
                ),
                "give the share of the flagship's quality to keep, such as 0.95",
            ));
        }
        if !(0.0..=1.0).contains(&self.routing.default_quality_floor) {
            return Err(Invalid::new(
                root.key("routing").key("default_quality_floor"),
                "floor outside 0..1",
                "give a value between 0 and 1",
            ));
        }
        if self.routing.max_chain == 0 {
            return Err(Invalid::new(
                root.key("routing").key("max_chain"),
                "a chain needs at least one entry",
                "use 1 or more (4 is typical)",
            ));
        }
        if self.routing.retry.attempts_per_deployment == 0 {
            return Err(Invalid::new(
                root.key("routing")
                    .key("retry")
                    .key("attempts_per_deployment"),
                "0 attempts would never call anything",
                "use 1 or more",
            ));
        }
        Ok(())
    }
}

impl ObservabilityConfig {
    /// The metrics address, when set, is `IP:PORT`.
    fn validate(&self) -> Result<(), Invalid> {
        let Some(addr) = &self.metrics_addr else {
            return Ok(());
        };
        // Parsing only (`core::net`): the domain crate opens no socket.
        if addr.trim().parse::<core::net::SocketAddr>().is_err() {
            return Err(Invalid::new(
                KeyPath::root().key("observability").key("metrics_addr"),
                format!("`{addr}` is not a socket address"),
                "write IP:PORT, such as \"127.0.0.1:9464\" (\"0.0.0.0:9464\" listens on every interface; port 0 picks a free one)",
            ));
        }
        Ok(())
    }
}

impl DeploymentConfig {
    /// One deployment's settings, `at` its place in the file.
    fn validate(&self, at: &KeyPath, catalog: &Catalog) -> Result<(), Invalid> {
        if catalog.get(&self.model).is_none() {
            return Err(Invalid::new(
                at.key("model"),
                format!("model `{}` is not in the catalog", self.model),
                format!("use one of: {}", catalog.names().join(", ")),
            ));
        }
        if self.api_key_env.is_some() && self.api_key_file.is_some() {
            return Err(Invalid::new(
                at.key("api_key_file"),
                "both api_key_env and api_key_file are set",
                "keep one of them",
            ));
        }
        if !(self.share > 0.0 && self.share <= 1.0) {
            return Err(Invalid::new(
                at.key("share"),
                format!("share {} is not in (0, 1]", self.share),
                "give this worker's fraction of the key's limits, such as 0.5",
            ));
        }
        if self.limit_window < Duration::from_millis(100) {
            return Err(Invalid::new(
                at.key("limit_window"),
                "a window under 100 ms cannot be enforced",
                "use the provider's period, such as \"60s\" or \"1s\"",
            ));
        }
        if self.rpm == Some(0) || self.tpm == Some(0) {
            return Err(Invalid::new(
                at.key(if self.rpm == Some(0) { "rpm" } else { "tpm" }),
                "a limit of 0 would block every call",
                "omit the limit or give a positive value",
            ));
        }
        if let Some(url) = &self.base_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(Invalid::new(
                at.key("base_url"),
                format!("`{url}` is not an http(s) URL"),
                "write it as https://host/path",
            ));
        }
        let t = self.timeouts;
        if t.connect.is_zero() || t.first_byte.is_zero() || t.total < t.first_byte {
            return Err(Invalid::new(
                at.key("timeouts"),
                "timeouts must be positive and total at least first_byte",
                "for example connect = \"5s\", first_byte = \"60s\", total = \"180s\"",
            ));
        }
        Ok(())
    }
}

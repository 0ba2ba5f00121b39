//! The HTTP server: one axum router with a route per wire format, shared state
//! (config, per-model windows and counters, runtime outages) and the lifecycle.
//! [`start`] spawns the server on the current runtime and returns a [`SimHandle`]
//! that owns the task; [`serve_until`] runs it in place until a shutdown future
//! resolves (the CLI). Shutdown is prompt: requests still waiting (hanging or
//! simulating latency) are answered 503 at once, then the server closes.
//! `GET /sim/stats` answers [`SimStats`] as JSON, for clients in another process
//! (the `bench` command reads the peak of HTTP requests in flight there).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use parking_lot::Mutex;
use switchyard_core::catalog::Api;
use switchyard_core::config::ConfigError;
use switchyard_core::job::Role;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::debug;

use crate::admission::{Ask, Clock, LimitReport, ModelState, Verdict};
use crate::batch::{BatchSim, PromptLog};
use crate::config::OutputTokens;
use crate::config::SimConfig;
use crate::stats::SimStats;
use crate::synthesis::{Fnv, Reply, ReplyStyle, reply_of_length, splitmix64, unit};
use crate::wire::{Context, Format, Parsed, Problem};
use crate::{Result, SimError};

/// Largest accepted request body: a million-token prompt is about 4 MB.
const MAX_BODY_BYTES: usize = 64 << 20;

/// A running simulator. Dropping it stops the server too (without waiting);
/// prefer [`SimHandle::shutdown`], which waits until every connection is closed.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    state: Arc<SimState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<()>>>,
}

/// Binds `addr` (port 0 picks a free port) and serves on the current tokio runtime.
pub async fn start(config: SimConfig, addr: SocketAddr) -> Result<SimHandle> {
    validate(&config)?;
    let listener = bind(addr).await?;
    let local = listener
        .local_addr()
        .map_err(|source| SimError::Bind { addr, source })?;
    let (state, shutdown_tx) = SimState::new(config);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run(listener, Arc::clone(&state), shutdown_tx, async move {
        // A dropped handle stops the server as well.
        let _ = stopped.await;
    }));
    debug!(addr = %local, "Simulated providers listening.");
    Ok(SimHandle {
        addr: local,
        state,
        stop: Some(stop),
        task: Some(task),
    })
}

/// Serves on `addr` until `shutdown` resolves, then stops promptly. Prints nothing.
pub async fn serve_until(
    config: SimConfig,
    addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    validate(&config)?;
    let listener = bind(addr).await?;
    let (state, shutdown_tx) = SimState::new(config);
    run(listener, state, shutdown_tx, shutdown).await
}

fn validate(config: &SimConfig) -> Result<()> {
    config.validate().map_err(|invalid| {
        SimError::Config(ConfigError {
            origin: "simulator config".into(),
            line: None,
            key: invalid.path.to_string(),
            problem: invalid.problem,
            fix: invalid.fix,
        })
    })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| SimError::Bind { addr, source })
}

async fn run(
    listener: TcpListener,
    state: Arc<SimState>,
    shutdown_tx: watch::Sender<bool>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let app = router(state);
    let signal = async move {
        stop.await;
        // Releases every request still waiting, so the graceful close is prompt.
        let _ = shutdown_tx.send(true);
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(signal)
        .await
        .map_err(SimError::Serve)
}

impl SimHandle {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL a deployment of this API should use, such as `http://127.0.0.1:PORT/openai/v1`
    /// (OpenAI-compatible deployments share the OpenAI route).
    pub fn base_url(&self, api: Api) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let host = SocketAddr::new(ip, self.addr.port());
        match api {
            Api::Openai | Api::OpenaiCompatible => format!("http://{host}/openai/v1"),
            Api::Anthropic => format!("http://{host}/anthropic/v1"),
            Api::Gemini => format!("http://{host}/gemini/v1beta"),
        }
    }

    /// Starts (`Some(status)`) or ends (`None`) an outage of `model`: until it ends,
    /// every request for the model gets `status` with the format's error body.
    /// Overrides scheduled outages while set.
    pub fn set_outage(&self, model: &str, status: Option<u16>) {
        self.state.with_model(model, |m| m.set_outage(status));
    }

    /// What the simulator has answered so far.
    pub fn stats(&self) -> SimStats {
        self.state.stats()
    }

    /// Stops accepting requests, answers the waiting ones 503 and waits until the
    /// server task ends.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(|e| SimError::Task(e.to_string()))?,
            None => Ok(()),
        }
    }
}

/// State shared by the handlers.
#[derive(Debug)]
struct SimState {
    config: SimConfig,
    started: Instant,
    models: Mutex<HashMap<String, ModelState>>,
    invalid_requests: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    shutdown: watch::Receiver<bool>,
    /// Every prompt that arrived, live or in a batch.
    prompts: Arc<PromptLog>,
    /// The batch APIs.
    batch: Arc<BatchSim>,
}

/// Counts one HTTP request in flight for as long as it lives.
struct InFlight(Arc<SimState>);

impl InFlight {
    fn enter(state: &Arc<SimState>) -> Self {
        let now = state.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        state.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        Self(Arc::clone(state))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One HTTP request as it arrived.
struct Request<'a> {
    format: Format,
    /// The model named in the URL (Gemini).
    path_model: Option<&'a str>,
    headers: &'a HeaderMap,
    query: Option<&'a str>,
    body: &'a [u8],
    /// See [`SimState::request_hash`].
    hash: u64,
}

/// A checked request and the reply the simulator composes for it.
struct Composed<'a> {
    parsed: &'a Parsed,
    /// The conversation, borrowed from `parsed`.
    messages: Vec<(Role, &'a str)>,
    reply: Reply,
    /// Whether answers use the whole cap (`output_tokens = "max"`).
    fill: bool,
}

impl<'a> Composed<'a> {
    fn new(parsed: &'a Parsed, fill: bool) -> Self {
        let messages: Vec<(Role, &str)> = parsed
            .messages
            .iter()
            .map(|(role, text)| (*role, text.as_str()))
            .collect();
        let style = if parsed.json_mode {
            ReplyStyle::Json
        } else {
            ReplyStyle::Text
        };
        let reply = reply_of_length(
            parsed.system.as_deref(),
            &messages,
            parsed.max_tokens,
            style,
            fill,
        );
        Self {
            parsed,
            messages,
            reply,
            fill,
        }
    }

    /// The reply to the request in `style`.
    fn reply_as(&self, style: ReplyStyle) -> Reply {
        reply_of_length(
            self.parsed.system.as_deref(),
            &self.messages,
            self.parsed.max_tokens,
            style,
            self.fill,
        )
    }
}

/// Salt of the roll deciding `invalid_key_rate`.
const INVALID_KEY_ROLL: u64 = 0x6b65_795f_726f_6c6c;

impl SimState {
    fn new(config: SimConfig) -> (Arc<Self>, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(false);
        let prompts = Arc::new(PromptLog::default());
        let batch = Arc::new(BatchSim::new(config.clone(), prompts.clone()));
        let state = Self {
            prompts,
            batch,
            config,
            started: Instant::now(),
            models: Mutex::new(HashMap::new()),
            invalid_requests: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            peak_in_flight: AtomicU64::new(0),
            shutdown: rx,
        };
        (Arc::new(state), tx)
    }

    fn with_model<T>(&self, model: &str, f: impl FnOnce(&mut ModelState) -> T) -> T {
        let mut models = self.models.lock();
        let state = models.entry(model.to_owned()).or_insert_with(|| {
            ModelState::new(self.config.behaviour(model).clone(), self.config.time_scale)
        });
        f(state)
    }

    fn stats(&self) -> SimStats {
        let models = self.models.lock();
        let models: std::collections::BTreeMap<_, _> = models
            .iter()
            .map(|(k, m)| (k.clone(), m.stats().clone()))
            .collect();
        let total_output_tokens = models.values().map(|m| m.usage.output_tokens).sum();
        let (distinct_prompts, repeated_prompts) = self.prompts.counts();
        SimStats {
            distinct_prompts,
            repeated_prompts,
            batch: self.batch.stats(),
            models,
            invalid_requests: self.invalid_requests.load(Ordering::Relaxed),
            total_output_tokens,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            peak_in_flight: self.peak_in_flight.load(Ordering::Relaxed),
        }
    }

    /// Waits `delay`; false when the server began shutting down first.
    async fn wait(&self, delay: Option<Duration>) -> bool {
        let mut shutdown = self.shutdown.clone();
        let stopping = shutdown.wait_for(|stopping| *stopping);
        match delay {
            Some(delay) => tokio::select! {
                _ = tokio::time::sleep(delay) => true,
                _ = stopping => false,
            },
            None => {
                let _ = stopping.await;
                false
            }
        }
    }

    fn refuse(
        &self,
        format: Format,
        model: &str,
        request_id: String,
        problem: &Problem,
    ) -> Response {
        self.invalid_requests.fetch_add(1, Ordering::Relaxed);
        format.failure(
            &Context {
                model,
                request_id,
                limits: LimitReport::default(),
            },
            problem,
        )
    }

    /// One request, from authentication to the answer: checked as the API
    /// checks it, composed into a reply, admitted (or not) by the model's
    /// simulated limits and faults, then answered.
    async fn handle(
        self: &Arc<Self>,
        format: Format,
        path_model: Option<&str>,
        headers: &HeaderMap,
        query: Option<&str>,
        body: &[u8],
    ) -> Response {
        let in_flight = InFlight::enter(self);
        let request = Request {
            format,
            path_model,
            headers,
            query,
            body,
            hash: self.request_hash(format, path_model, body),
        };
        let parsed = match self.check(&request) {
            Ok(parsed) => parsed,
            Err(refused) => return *refused,
        };
        self.prompts.note(&parsed);
        let fill = self.config.behaviour(&parsed.model).output_tokens == OutputTokens::Max;
        let composed = Composed::new(&parsed, fill);
        let (verdict, request_id) = self.admit(&parsed, request.hash, &composed.reply);
        debug!(format = format.name(), model = parsed.model.as_str(), request_id = %request_id, verdict = ?verdict, "Simulated request.");
        self.answer(format, &composed, request_id, verdict, in_flight)
            .await
    }

    /// The request's seed-dependent hash: what makes every roll of a request
    /// (faults, latency, the reply) the same each time it is sent.
    fn request_hash(&self, format: Format, path_model: Option<&str>, body: &[u8]) -> u64 {
        let mut hash = Fnv::new();
        hash.write(&self.config.seed.to_le_bytes());
        hash.write(format.name().as_bytes());
        hash.write(path_model.unwrap_or_default().as_bytes());
        hash.write(body);
        hash.finish()
    }

    /// Checks the request as the real API would before it reaches a model:
    /// the key, the body, a key the model's account refuses, parameters the
    /// model does not take, and the output cap; the refusal when one fails.
    fn check(&self, request: &Request<'_>) -> std::result::Result<Parsed, Box<Response>> {
        let format = request.format;
        let hash = request.hash;
        let refuse = |problem: &Problem| {
            Box::new(self.refuse(
                format,
                request.path_model.unwrap_or_default(),
                format!("{hash:016x}"),
                problem,
            ))
        };
        format
            .authorize(request.headers, request.query)
            .map_err(|problem| refuse(&problem))?;
        let parsed = format
            .parse(request.path_model, request.body)
            .map_err(|problem| refuse(&problem))?;
        let behaviour = self.config.behaviour(&parsed.model);
        if behaviour.invalid_key_rate > 0.0
            && unit(splitmix64(hash ^ INVALID_KEY_ROLL)) < behaviour.invalid_key_rate
        {
            let problem = Problem::InvalidKey {
                presented: format.presented_key(request.headers, request.query),
            };
            return Err(Box::new(self.refuse_for_model(
                format,
                &parsed.model,
                hash,
                &problem,
            )));
        }
        if let Some(problem) = parsed.refused(&behaviour.unsupported_params) {
            return Err(Box::new(self.refuse_for_model(
                format,
                &parsed.model,
                hash,
                &problem,
            )));
        }
        if let (Some(limit), Some(asked)) = (behaviour.max_output_tokens, parsed.max_tokens)
            && asked > limit
        {
            let problem = Problem::bad(format!(
                "max_tokens is too large: {asked}. This model supports at most {limit} output tokens."
            ));
            return Err(Box::new(self.refuse(
                format,
                &parsed.model,
                format!("{hash:016x}"),
                &problem,
            )));
        }
        Ok(parsed)
    }

    /// Asks the model's state whether it serves the request now; gives the
    /// verdict and the request id (the hash and the model's request count).
    fn admit(&self, parsed: &Parsed, request_hash: u64, reply: &Reply) -> (Verdict, String) {
        let ask = Ask {
            request_hash,
            tokens: reply.usage.total(),
            output_tokens: reply.usage.output_tokens,
            json_mode: parsed.json_mode,
        };
        let now = Instant::now();
        let clock = Clock {
            now,
            elapsed: now.saturating_duration_since(self.started),
            time_scale: self.config.time_scale,
        };
        let (verdict, sequence) =
            self.with_model(&parsed.model, |m| (m.admit(clock, ask), m.stats().requests));
        (verdict, format!("{request_hash:016x}{sequence:08x}"))
    }

    /// Answers as the verdict says: the reply after its delay, or the problem.
    async fn answer(
        &self,
        format: Format,
        composed: &Composed<'_>,
        request_id: String,
        verdict: Verdict,
        in_flight: InFlight,
    ) -> Response {
        let model = composed.parsed.model.as_str();
        let hint = self.config.behaviour(model).rate_limit_hint;
        let (problem, limits) = match verdict {
            Verdict::Serve {
                delay,
                invalid_json,
                slow_body,
                limits,
            } => {
                let ctx = Context {
                    model,
                    request_id,
                    limits,
                };
                if !self.wait(Some(delay)).await {
                    return self.answer_problem(format, &ctx, &Problem::ShuttingDown);
                }
                return self
                    .serve(format, &ctx, composed, invalid_json, slow_body, in_flight)
                    .await;
            }
            Verdict::Hang => {
                self.wait(None).await;
                (Problem::ShuttingDown, LimitReport::default())
            }
            Verdict::Outage { status } => (Problem::Outage { status }, LimitReport::default()),
            Verdict::Limited {
                scope,
                retry_after,
                limit,
                used,
                requested,
                limits,
            } => (
                Problem::RateLimited {
                    retry_after,
                    scope: Some(scope),
                    limit,
                    used,
                    requested,
                    hint,
                },
                limits,
            ),
            Verdict::Throttled {
                retry_after,
                limits,
            } => (
                Problem::RateLimited {
                    retry_after,
                    scope: None,
                    limit: 0,
                    used: 0,
                    requested: 1,
                    hint,
                },
                limits,
            ),
            Verdict::Internal => (Problem::Internal, LimitReport::default()),
            Verdict::Overloaded => (Problem::Overloaded, LimitReport::default()),
        };
        self.answer_problem(
            format,
            &Context {
                model,
                request_id,
                limits,
            },
            &problem,
        )
    }

    /// Serves an admitted request once its latency is over: breaks its JSON
    /// when the model is due to, counts it, and sends the body (slowly, if asked).
    async fn serve(
        &self,
        format: Format,
        ctx: &Context<'_>,
        composed: &Composed<'_>,
        invalid_json: bool,
        slow_body: Option<Duration>,
        in_flight: InFlight,
    ) -> Response {
        let broken;
        let reply = if invalid_json {
            broken = composed.reply_as(ReplyStyle::BrokenJson);
            &broken
        } else {
            &composed.reply
        };
        self.with_model(ctx.model, |m| {
            m.record_success(&composed.reply.usage, invalid_json)
        });
        let answer = format.success(ctx, reply);
        match slow_body {
            Some(over) => self.trickle(answer, over, in_flight).await,
            None => answer,
        }
    }

    /// Refuses a well-formed request for `model` before admission (a key it does
    /// not know, a parameter it does not take), counted under the model.
    fn refuse_for_model(
        &self,
        format: Format,
        model: &str,
        request_hash: u64,
        problem: &Problem,
    ) -> Response {
        let status = format.status_of(problem);
        let sequence = self.with_model(model, |m| {
            m.record_refused(status);
            m.stats().requests
        });
        format.failure(
            &Context {
                model,
                request_id: format!("{request_hash:016x}{sequence:08x}"),
                limits: LimitReport::default(),
            },
            problem,
        )
    }

    /// Sends `answer`'s headers now and its body in ten pieces spread over `over`
    /// (all at once if the server begins shutting down). The request stays in
    /// flight until the last piece is out.
    async fn trickle(&self, answer: Response, over: Duration, in_flight: InFlight) -> Response {
        let (mut parts, body) = answer.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
            return Response::from_parts(parts, axum::body::Body::empty());
        };
        parts.headers.remove(header::CONTENT_LENGTH);
        const PIECES: usize = 10;
        let size = bytes.len().div_ceil(PIECES).max(1);
        let pieces: Vec<Bytes> = (0..bytes.len())
            .step_by(size)
            .map(|at| bytes.slice(at..(at + size).min(bytes.len())))
            .collect();
        let gap = over / u32::try_from(pieces.len().max(1)).unwrap_or(1);
        let shutdown = self.shutdown.clone();
        let stream = futures::stream::unfold(
            (pieces.into_iter(), shutdown, in_flight),
            move |(mut pieces, mut shutdown, in_flight)| async move {
                let piece = pieces.next()?;
                if !*shutdown.borrow() {
                    tokio::select! {
                        _ = tokio::time::sleep(gap) => {}
                        _ = shutdown.wait_for(|stopping| *stopping) => {}
                    }
                }
                Some((
                    Ok::<_, std::convert::Infallible>(piece),
                    (pieces, shutdown, in_flight),
                ))
            },
        );
        Response::from_parts(parts, axum::body::Body::from_stream(stream))
    }

    fn answer_problem(&self, format: Format, ctx: &Context<'_>, problem: &Problem) -> Response {
        let status = format.status_of(problem);
        self.with_model(ctx.model, |m| m.record_status(status));
        format.failure(ctx, problem)
    }
}

fn router(state: Arc<SimState>) -> Router {
    let batches = crate::batch::router(state.batch.clone());
    Router::new()
        .route("/openai/v1/chat/completions", post(openai))
        .route("/anthropic/v1/messages", post(anthropic))
        .route("/gemini/v1beta/models/{target}", post(gemini))
        .route("/sim/stats", get(stats))
        .fallback(not_found)
        .with_state(state)
        .merge(batches)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

async fn stats(State(state): State<Arc<SimState>>) -> Response {
    axum::Json(state.stats()).into_response()
}

async fn openai(State(state): State<Arc<SimState>>, headers: HeaderMap, body: Bytes) -> Response {
    state
        .handle(Format::OpenAi, None, &headers, None, &body)
        .await
}

async fn anthropic(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state
        .handle(Format::Anthropic, None, &headers, None, &body)
        .await
}

/// `models/{model}:generateContent`; the colon is inside the path segment.
async fn gemini(
    State(state): State<Arc<SimState>>,
    Path(target): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match target.rsplit_once(':') {
        Some((model, "generateContent")) if !model.is_empty() => {
            state
                .handle(
                    Format::Gemini,
                    Some(model),
                    &headers,
                    query.as_deref(),
                    &body,
                )
                .await
        }
        _ => {
            let message = format!(
                "models/{target} is not found for API version v1beta, or is not supported; the simulator serves POST /gemini/v1beta/models/{{model}}:generateContent"
            );
            state.refuse(
                Format::Gemini,
                "",
                "0".into(),
                &Problem::NotFound { message },
            )
        }
    }
}

async fn not_found(State(state): State<Arc<SimState>>, method: Method, uri: Uri) -> Response {
    let path = uri.path();
    let format = if path.starts_with("/anthropic") {
        Format::Anthropic
    } else if path.starts_with("/gemini") {
        Format::Gemini
    } else {
        Format::OpenAi
    };
    let message = format!(
        "Invalid URL ({method} {path}). The simulator serves POST /openai/v1/chat/completions, POST /anthropic/v1/messages and POST /gemini/v1beta/models/{{model}}:generateContent, and the batch APIs under /openai/v1/files, /openai/v1/batches and /anthropic/v1/messages/batches"
    );
    state.refuse(format, "", "0".into(), &Problem::NotFound { message })
}

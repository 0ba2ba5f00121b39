//! The worker's alerts: every second, on a task of its own, it reads what it
//! watches (each budgeted node's spend, each rationed node's quota use, each
//! deployment's circuit, error rate and latency, its own dead letters, the
//! workers' group lag on the jobs topic), and
//! publishes each crossing ([`AlertWatch`]) as JSON to the alerts topic, keyed
//! by [`Alert::key`], and logs it. Each worker follows the alerts topic and
//! does not publish a transition the topic already has (another worker saw
//! the crossing first, or this one did before a restart); two workers that see
//! one crossing within the follow lag both write it, under one key, and the
//! usage sink delivers each key's transition once. Routing never waits for
//! this task: a publication that fails is retried on the next tick.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use switchyard_core::alert::{Alert, AlertKind, AlertState, AlertWatch, Reading, Side};
use switchyard_core::config::{AlertsConfig, KafkaConfig, PipelineConfig};
use switchyard_core::health::CircuitState;
use switchyard_kafka::produce::{acknowledged, enqueue};
use switchyard_kafka::{FollowSpec, ScanFrom, TopicFollower};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::Engine;

/// How often the watched values are read.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);
/// How often the workers' group lag is measured.
pub const LAG_EVERY: Duration = Duration::from_secs(10);
/// Longest wait for the alerts published so far before watching anyway.
const CATCH_UP: Duration = Duration::from_secs(10);
/// Alerts kept for another try while the topic refuses them.
const MAX_UNSENT: usize = 1_000;
/// The span over which the jobs' error rate is taken.
pub const JOBS_WINDOW: Duration = Duration::from_secs(300);
/// A value firing at a threshold clears below this fraction of it.
const HYSTERESIS: f64 = 0.8;

/// How much a running count grew over the last `span` (a minute of dead
/// letters, five minutes of jobs).
#[derive(Debug)]
pub struct CountWindow {
    span: Duration,
    samples: VecDeque<(Instant, u64)>,
}

impl CountWindow {
    /// A window over the last `span`.
    pub fn new(span: Duration) -> Self {
        Self {
            span,
            samples: VecDeque::new(),
        }
    }

    /// Takes the running count at `now`; returns how much it grew within the
    /// window (what came before the first sample is not counted).
    pub fn observe(&mut self, now: Instant, total: u64) -> u64 {
        self.samples.push_back((now, total));
        while let Some(&(t, _)) = self.samples.front() {
            if now.duration_since(t) > self.span && self.samples.len() > 1 {
                self.samples.pop_front();
            } else {
                break;
            }
        }
        let first = self.samples.front().map_or(total, |&(_, c)| c);
        total.saturating_sub(first)
    }
}

/// What a worker watches, and what it has seen fire.
pub struct Watcher {
    engine: Arc<Engine>,
    config: AlertsConfig,
    dlq_topic: String,
    watch: AlertWatch,
    dead_letters: CountWindow,
    /// Jobs that ended failed, and jobs that ended, over [`JOBS_WINDOW`].
    jobs: (CountWindow, CountWindow),
    /// The workers' group and its last measured lag, when measured.
    lag: Option<(String, Arc<AtomicI64>)>,
}

impl Watcher {
    /// A watcher over `engine`'s figures, with `config`'s thresholds.
    pub fn new(engine: Arc<Engine>, config: AlertsConfig, dlq_topic: String) -> Self {
        Self {
            engine,
            config,
            dlq_topic,
            watch: AlertWatch::default(),
            dead_letters: CountWindow::new(Duration::from_secs(60)),
            jobs: (CountWindow::new(JOBS_WINDOW), CountWindow::new(JOBS_WINDOW)),
            lag: None,
        }
    }

    /// Also watches `group`'s lag, as [`measure_lag`] keeps it in `lag`.
    pub fn with_lag(mut self, group: String, lag: Arc<AtomicI64>) -> Self {
        self.lag = Some((group, lag));
        self
    }

    /// Reads every watched value at `now`; returns the transitions.
    pub fn tick(&mut self, now: DateTime<Utc>, clock: Instant) -> Vec<Alert> {
        let engine = self.engine.clone();
        let local = now.with_timezone(&engine.org().time_zone());
        let mut out = Vec::new();
        self.budgets(&engine, &local.format("%Y-%m").to_string(), now, &mut out);
        let minute = local.format("%Y-%m-%dT%H:%M").to_string();
        let day = local.format("%Y-%m-%d").to_string();
        self.quotas(&engine, (&minute, &day), now, &mut out);
        self.deployments(&engine, now, &mut out);
        self.dead_letters(&engine, clock, now, &mut out);
        self.error_rate(&engine, clock, now, &mut out);
        self.consumer_lag(now, &mut out);
        out
    }

    /// One reading, its transitions added to `out`.
    fn observe(&mut self, r: &Reading<'_>, now: DateTime<Utc>, out: &mut Vec<Alert>) {
        out.extend(self.watch.observe(r, now));
    }

    /// Each budgeted node's settled spend against each threshold.
    fn budgets(&mut self, engine: &Engine, month: &str, now: DateTime<Utc>, out: &mut Vec<Alert>) {
        for (node, _) in engine.org().budgets() {
            let Some(b) = engine.node_budget(node) else {
                continue;
            };
            if b.budget_usd <= 0.0 {
                continue;
            }
            let used = b.spent_usd / b.budget_usd;
            for t in self.config.budget_thresholds.clone() {
                let r = Reading {
                    kind: AlertKind::BudgetThreshold,
                    node,
                    threshold: t,
                    value: used,
                    side: Side::of(used, t, t),
                    period: month,
                };
                self.observe(&r, now, out);
            }
        }
    }

    /// Each rationed node's quotas, used up or not, in their current periods.
    fn quotas(
        &mut self,
        engine: &Engine,
        (minute, day): (&str, &str),
        now: DateTime<Utc>,
        out: &mut Vec<Alert>,
    ) {
        for (node, q) in engine.org().quotas() {
            let u = engine.quota_use(node);
            for (name, limit, used, period) in [
                ("jobs_per_minute", q.jobs_per_minute, u.jobs_minute, minute),
                (
                    "tokens_per_minute",
                    q.tokens_per_minute,
                    u.tokens_minute,
                    minute,
                ),
                ("jobs_per_day", q.jobs_per_day, u.jobs_day, day),
                ("tokens_per_day", q.tokens_per_day, u.tokens_day, day),
            ] {
                let Some(limit) = limit else { continue };
                let (limit, used) = (limit as f64, used as f64);
                let period = format!("{name} {period}");
                let r = Reading {
                    kind: AlertKind::QuotaExhausted,
                    node,
                    threshold: limit,
                    value: used,
                    side: Side::of(used, limit, limit),
                    period: &period,
                };
                self.observe(&r, now, out);
            }
        }
    }

    /// Each deployment's circuit and latency, as this worker sees them.
    fn deployments(&mut self, engine: &Engine, now: DateTime<Utc>, out: &mut Vec<Alert>) {
        for (id, d) in engine.router().deployments().iter().enumerate() {
            let h = engine.health().snapshot(id);
            let side = match h.circuit {
                CircuitState::Open => Side::Over,
                CircuitState::HalfOpen { .. } => Side::Between,
                CircuitState::Closed => Side::Under,
            };
            let open = if h.circuit == CircuitState::Closed {
                0.0
            } else {
                1.0
            };
            let mut readings = vec![Reading {
                kind: AlertKind::CircuitOpen,
                node: &d.name,
                threshold: 1.0,
                value: open,
                side,
                period: "",
            }];
            if let Some(ms) = h.ewma_latency_ms {
                let t = self.config.latency.as_secs_f64() * 1000.0;
                readings.push(Reading {
                    kind: AlertKind::Latency,
                    node: &d.name,
                    threshold: t,
                    value: ms,
                    side: Side::of(ms, t, t * HYSTERESIS),
                    period: "",
                });
            }
            for r in &readings {
                self.observe(r, now, out);
            }
        }
    }

    /// This worker's dead letters over the last minute.
    fn dead_letters(
        &mut self,
        engine: &Engine,
        clock: Instant,
        now: DateTime<Utc>,
        out: &mut Vec<Alert>,
    ) {
        let letters = self
            .dead_letters
            .observe(clock, engine.metrics.dead_letters()) as f64;
        let t = self.config.dead_letters_per_minute as f64;
        let topic = self.dlq_topic.clone();
        let r = Reading {
            kind: AlertKind::DeadLetters,
            node: &topic,
            threshold: t,
            value: letters,
            side: Side::of(letters, t, t),
            period: "",
        };
        self.observe(&r, now, out);
    }

    /// The share of this worker's jobs that ended failed over the last five
    /// minutes (once enough ended), as the Prometheus rule computes it over
    /// every worker's.
    fn error_rate(
        &mut self,
        engine: &Engine,
        clock: Instant,
        now: DateTime<Utc>,
        out: &mut Vec<Alert>,
    ) {
        let failed = self.jobs.0.observe(clock, engine.metrics.failed());
        let ended = self.jobs.1.observe(clock, engine.metrics.finished());
        if ended < self.config.error_rate_min_jobs.max(1) {
            return;
        }
        let (rate, t) = (failed as f64 / ended as f64, self.config.error_rate);
        let group = self
            .lag
            .as_ref()
            .map_or_else(|| "jobs".to_owned(), |(g, _)| g.clone());
        let r = Reading {
            kind: AlertKind::ErrorRate,
            node: &group,
            threshold: t,
            value: rate,
            side: Side::of(rate, t, t * HYSTERESIS),
            period: "",
        };
        self.observe(&r, now, out);
    }

    /// The workers' group lag on the jobs topic, as last measured.
    fn consumer_lag(&mut self, now: DateTime<Utc>, out: &mut Vec<Alert>) {
        let Some((group, lag)) = &self.lag else {
            return;
        };
        let lag = lag.load(Ordering::Relaxed);
        if lag < 0 {
            return;
        }
        let (lag, t) = (lag as f64, self.config.consumer_lag as f64);
        let group = group.clone();
        let r = Reading {
            kind: AlertKind::ConsumerLag,
            node: &group,
            threshold: t,
            value: lag,
            side: Side::of(lag, t, t * HYSTERESIS),
            period: "",
        };
        self.observe(&r, now, out);
    }
}

/// Measures the group's lag on `topic` every [`LAG_EVERY`] into `lag` (−1
/// until known), on a blocking thread, until `stop`.
pub async fn measure_lag(
    kafka: KafkaConfig,
    topic: String,
    lag: Arc<AtomicI64>,
    stop: CancellationToken,
) {
    loop {
        let (k, group, t) = (kafka.clone(), kafka.group_id.clone(), topic.clone());
        let measuring = tokio::task::spawn_blocking(move || {
            switchyard_kafka::group_lag(&k, &group, &t, Duration::from_secs(10))
        });
        let measured = tokio::select! {
            () = stop.cancelled() => return,
            m = measuring => m,
        };
        match measured {
            Ok(Ok(n)) => lag.store(n, Ordering::Relaxed),
            Ok(Err(e)) => debug!(error = %e, "Could not measure the workers' lag; trying again."),
            Err(_) => {}
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(LAG_EVERY) => {}
        }
    }
}

/// The newest state of each alert key on the alerts topic, as followed: a
/// transition another worker (or this one before a restart) has published
/// is not published again.
pub type Published = Arc<Mutex<HashMap<String, AlertState>>>;

/// A worker's alert tasks: the watcher, the lag measurer and the follower of
/// the alerts topic.
pub struct Alerts {
    watching: JoinHandle<()>,
    measuring: JoinHandle<()>,
    follower: TopicFollower,
}

impl Alerts {
    /// Starts watching `engine` with `config`'s thresholds, publishing with
    /// `producer`, until `stop`.
    pub fn start(
        engine: Arc<Engine>,
        config: &PipelineConfig,
        producer: FutureProducer,
        stop: CancellationToken,
    ) -> Self {
        let topics = &config.kafka.topics;
        let topics_alerts = topics.alerts.clone();
        let published = Published::default();
        let seen = published.clone();
        let (follower, caught_up) = TopicFollower::start(
            &config.kafka,
            FollowSpec {
                name: "alerts",
                topic: topics.alerts.clone(),
                from: ScanFrom::Beginning,
            },
            move |m| {
                m.payload()
                    .and_then(|p| serde_json::from_slice::<Alert>(p).ok())
                    .map(|a| seen.lock().insert(a.key(), a.state))
                    .is_some()
            },
        );
        let lag = Arc::new(AtomicI64::new(-1));
        let measuring = tokio::spawn(measure_lag(
            config.kafka.clone(),
            topics.jobs.name.clone(),
            lag.clone(),
            stop.clone(),
        ));
        let watcher = Watcher::new(engine, config.alerts.clone(), topics.dlq.clone())
            .with_lag(config.kafka.group_id.clone(), lag);
        let watching = tokio::spawn(async move {
            // What is already published is known before the first reading, so
            // a restarted worker does not publish its crossings again (a topic
            // that cannot be read holds alerts back a few seconds only).
            let read = tokio::task::spawn_blocking(move || caught_up.recv_timeout(CATCH_UP));
            tokio::select! {
                () = stop.cancelled() => return,
                _ = read => {}
            }
            run(watcher, producer, topics_alerts, published, stop).await;
        });
        Self {
            watching,
            measuring,
            follower,
        }
    }

    /// Waits for the tasks (stopped by the token given to [`Alerts::start`])
    /// and stops the follower.
    pub async fn stop(self) {
        let _ = self.watching.await;
        let _ = self.measuring.await;
        let follower = self.follower;
        let _ = tokio::task::spawn_blocking(move || follower.stop()).await;
    }
}

/// Watches every [`WATCH_EVERY`] and publishes each transition to `topic`
/// (unless the topic already has it) until `stop`.
pub async fn run(
    mut watcher: Watcher,
    producer: FutureProducer,
    topic: String,
    published: Published,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unsent: VecDeque<Alert> = VecDeque::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        for alert in watcher.tick(Utc::now(), Instant::now()) {
            if published.lock().get(&alert.key()) == Some(&alert.state) {
                debug!(key = %alert.key(), state = %alert.state, "Alert already published (by another worker, or before a restart).");
                continue;
            }
            log(&alert);
            if unsent.len() == MAX_UNSENT {
                unsent.pop_front();
            }
            unsent.push_back(alert);
        }
        while let Some(alert) = unsent.front() {
            if !send(&producer, &topic, alert).await {
                break;
            }
            published.lock().insert(alert.key(), alert.state);
            unsent.pop_front();
        }
    }
}

fn log(a: &Alert) {
    match a.state {
        AlertState::Firing => {
            warn!(alert = %a.kind, node = %a.node, threshold = a.threshold, value = a.value, period = %a.period, "Alert firing.")
        }
        AlertState::Resolved => {
            info!(alert = %a.kind, node = %a.node, threshold = a.threshold, value = a.value, period = %a.period, "Alert resolved.")
        }
    }
}

/// Publishes one alert; false when the topic did not take it.
async fn send(producer: &FutureProducer, topic: &str, alert: &Alert) -> bool {
    let Ok(bytes) = serde_json::to_vec(alert) else {
        return true;
    };
    let key = alert.key();
    let delivered = match enqueue(producer, topic, Some(key.as_bytes()), &bytes, None).await {
        Ok(d) => acknowledged(d).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match delivered {
        Ok(()) => true,
        Err(e) => {
            warn!(topic, key = %key, error = %e, "Could not publish an alert; trying again in a second.");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use switchyard_core::health::CallOutcome;
    use switchyard_core::usage::UsageEvent;

    use super::*;

    #[test]
    fn the_window_counts_the_last_minutes_dead_letters() {
        let mut w = CountWindow::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(w.observe(t0, 5), 0, "letters before the watch started");
        assert_eq!(w.observe(t0 + Duration::from_secs(10), 7), 2);
        assert_eq!(w.observe(t0 + Duration::from_secs(65), 7), 0);
        assert_eq!(w.observe(t0 + Duration::from_secs(80), 7), 0);
    }

    fn engine() -> Arc<Engine> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let p = switchyard_loader::load_pipeline(&root.join("pipelines/demo.toml"), &[]).unwrap();
        let deployments = switchyard_providers::build_deployments_with(
            &p.config,
            &p.catalog,
            &switchyard_providers::BuildOptions {
                key_override: Some(switchyard_providers::ApiKey::new("test-key".into())),
                ..Default::default()
            },
        )
        .unwrap();
        Arc::new(Engine::new(&p, deployments).unwrap())
    }

    fn spend(engine: &Engine, usd: f64) {
        let e: UsageEvent = serde_json::from_value(serde_json::json!({
            "event_id": uuid::Uuid::now_v7().to_string(), "job_id": "j", "attempt": 0,
            "ts": Utc::now(), "org": "acme", "business_unit": "retail", "team": "marketing",
            "project": "campaigns", "workload": "w", "strategy": "auto", "category": "extraction",
            "complexity": 0.3, "chosen_model": "m", "routing_reason": "r", "provider": "p",
            "model": "m", "deployment": "d", "outcome": "succeeded",
            "usage": {"input_tokens": 1, "output_tokens": 1, "cached_input_tokens": 0},
            "cost_usd": usd, "baseline_cost_usd": usd, "latency_ms": 1
        }))
        .unwrap();
        engine.record_spend(&e);
    }

    /// (kind, node, threshold, state) of each alert.
    fn seen(alerts: &[Alert]) -> Vec<(AlertKind, String, f64, AlertState)> {
        alerts
            .iter()
            .map(|a| (a.kind, a.node.clone(), a.threshold, a.state))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn budget_circuit_and_dead_letter_alerts_fire_once_per_crossing_and_resolve_once() {
        let engine = engine();
        let dlq = "switchyard.jobs.dlq".to_owned();
        let mut w = Watcher::new(engine.clone(), AlertsConfig::default(), dlq.clone());
        let clock = Instant::now();
        let tick = |w: &mut Watcher, s: u64| w.tick(Utc::now(), clock + Duration::from_secs(s));
        assert!(tick(&mut w, 0).is_empty(), "nothing crossed yet");

        // acme/retail/marketing/campaigns has $4,000 a month.
        let campaigns = "acme/retail/marketing/campaigns".to_owned();
        spend(&engine, 2_100.0);
        assert_eq!(
            seen(&tick(&mut w, 1)),
            [(
                AlertKind::BudgetThreshold,
                campaigns.clone(),
                0.5,
                AlertState::Firing
            )]
        );
        spend(&engine, 10.0);
        assert!(tick(&mut w, 2).is_empty(), "still past 50%: no repeat");
        spend(&engine, 2_000.0);
        let both = seen(&tick(&mut w, 3));
        assert_eq!(
            both,
            [
                (
                    AlertKind::BudgetThreshold,
                    campaigns.clone(),
                    0.8,
                    AlertState::Firing
                ),
                (
                    AlertKind::BudgetThreshold,
                    campaigns.clone(),
                    1.0,
                    AlertState::Firing
                ),
            ],
            "one tick can cross several thresholds"
        );
        assert!(tick(&mut w, 4).is_empty());

        // A deployment's circuit opens, then closes after good probes.
        let cfg = switchyard_core::health::HealthConfig::default();
        for _ in 0..cfg.failure_threshold {
            engine.health().record(0, CallOutcome::Failure);
        }
        let name = engine.router().deployments()[0].name.clone();
        let opened = seen(&tick(&mut w, 5));
        assert!(
            opened.contains(&(
                AlertKind::CircuitOpen,
                name.clone(),
                1.0,
                AlertState::Firing
            )),
            "{opened:?}"
        );
        assert!(tick(&mut w, 6).is_empty(), "open stays one alert");
        tokio::time::advance(cfg.max_open_for + Duration::from_secs(1)).await;
        for _ in 0..cfg.half_open_probes {
            engine
                .health()
                .call_slot(0)
                .expect("a probe may go")
                .record(CallOutcome::Success {
                    latency_ms: 100.0,
                    expected_ms: 100.0,
                });
        }
        let closed = seen(&tick(&mut w, 7));
        assert!(
            closed.contains(&(
                AlertKind::CircuitOpen,
                name.clone(),
                1.0,
                AlertState::Resolved
            )),
            "{closed:?}"
        );
        assert!(tick(&mut w, 8).is_empty());

        // A dead letter: fires, and resolves a minute later.
        engine.metrics.dead_lettered();
        assert_eq!(
            seen(&tick(&mut w, 9)),
            [(AlertKind::DeadLetters, dlq.clone(), 1.0, AlertState::Firing)]
        );
        assert!(tick(&mut w, 30).is_empty());
        assert_eq!(
            seen(&tick(&mut w, 71)),
            [(AlertKind::DeadLetters, dlq, 1.0, AlertState::Resolved)]
        );
        let mut keys = BTreeMap::new();
        for a in w.watch.firing() {
            *keys.entry(a.key()).or_insert(0) += 1;
        }
        assert_eq!(keys.len(), 3, "the three budget thresholds: {keys:?}");
    }
}

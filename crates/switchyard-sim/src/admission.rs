//! Each request's fate, decided in one place and in a fixed order: an outage
//! (runtime or scheduled) answers first; then the `rpm`/`tpm` limiter; then one
//! seeded roll picks at most one injected fault (500, overloaded, 429, hang) with
//! the configured probabilities; separate rolls pick a slow first byte and, in JSON
//! mode, an invalid-JSON answer. The rolls hash the request body with a per-model
//! counter, so the same requests in the same order meet the same faults.

use std::time::Duration;

use switchyard_core::result::TokenUsage;
use tokio::time::Instant;

use crate::config::{ModelBehaviour, RATE_WINDOW, scale};
use crate::stats::ModelStats;
use crate::synthesis::{splitmix64, unit};
use crate::window::SlidingWindow;

/// Where the simulator is in time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    /// The request's arrival.
    pub now: Instant,
    /// Since server start.
    pub elapsed: Duration,
    /// The config's time scale.
    pub time_scale: f64,
}

/// What the limiter and the rolls need to know about a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ask {
    /// Hash of the seed, the model and the request body.
    pub request_hash: u64,
    /// Prompt and output tokens together (what `tpm` counts).
    pub tokens: u64,
    /// Output tokens (what the decode time depends on).
    pub output_tokens: u64,
    /// Whether JSON was asked for.
    pub json_mode: bool,
}

/// Which limit a 429 is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitScope {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
}

/// One limit as the rate-limit headers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quota {
    /// The limit per window.
    pub limit: u64,
    /// What is left in the current window.
    pub remaining: u64,
    /// Until the window is fully replenished.
    pub reset: Duration,
}

/// The limits a model enforces, for the response headers (none when unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LimitReport {
    /// From `rpm`.
    pub requests: Option<Quota>,
    /// From `tpm`.
    pub tokens: Option<Quota>,
}

/// What happens to a request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Verdict {
    /// An outage answers with this status.
    Outage { status: u16 },
    /// Over `rpm` or `tpm`: 429 with the wait until the request would fit.
    Limited {
        scope: LimitScope,
        retry_after: Duration,
        limit: u64,
        used: u64,
        requested: u64,
        limits: LimitReport,
    },
    /// Injected 500.
    Internal,
    /// Injected overload (529 or 503).
    Overloaded,
    /// Injected 429 with the configured (scaled) wait.
    Throttled {
        retry_after: Duration,
        limits: LimitReport,
    },
    /// Never answer.
    Hang,
    /// Answer 200 after `delay`; with `slow_body`, the body trickles in over that long.
    Serve {
        delay: Duration,
        invalid_json: bool,
        slow_body: Option<Duration>,
        limits: LimitReport,
    },
}

/// One model's live state: its behaviour, windows, runtime outage and counters.
#[derive(Debug, Clone)]
pub(crate) struct ModelState {
    behaviour: ModelBehaviour,
    counter: u64,
    arrivals: SlidingWindow,
    admitted: SlidingWindow,
    forced_outage: Option<u16>,
    stats: ModelStats,
}

impl ModelState {
    pub(crate) fn new(behaviour: ModelBehaviour, time_scale: f64) -> Self {
        let window = scale(RATE_WINDOW, time_scale);
        Self {
            behaviour,
            counter: 0,
            arrivals: SlidingWindow::new(window),
            admitted: SlidingWindow::new(window),
            forced_outage: None,
            stats: ModelStats::default(),
        }
    }

    /// Starts (`Some(status)`) or ends (`None`) a runtime outage.
    pub(crate) fn set_outage(&mut self, status: Option<u16>) {
        self.forced_outage = status;
    }

    pub(crate) fn stats(&self) -> &ModelStats {
        &self.stats
    }

    /// Decides the request's fate and counts its arrival.
    pub(crate) fn admit(&mut self, clock: Clock, ask: Ask) -> Verdict {
        let now = clock.now;
        self.counter += 1;
        self.stats.requests += 1;
        self.arrivals.prune(now);
        self.arrivals.push(now, 1);
        self.stats.peak_requests_per_window = self.arrivals.peak_len();

        if let Some(status) = self.forced_outage.or_else(|| {
            self.behaviour
                .scheduled_outage(clock.elapsed, clock.time_scale)
        }) {
            return Verdict::Outage { status };
        }

        self.admitted.prune(now);
        if let Some(rpm) = self.behaviour.rpm.map(u64::from)
            && self.admitted.len() >= rpm
        {
            let retry_after = self.admitted.wait_for_slot(now, rpm);
            return Verdict::Limited {
                scope: LimitScope::Requests,
                retry_after,
                limit: rpm,
                used: self.admitted.len(),
                requested: 1,
                limits: self.report(now),
            };
        }
        if let Some(tpm) = self.behaviour.tpm.map(u64::from)
            && self.admitted.weight() + ask.tokens > tpm
        {
            let retry_after = self.admitted.wait_for_weight(now, tpm, ask.tokens);
            return Verdict::Limited {
                scope: LimitScope::Tokens,
                retry_after,
                limit: tpm,
                used: self.admitted.weight(),
                requested: ask.tokens,
                limits: self.report(now),
            };
        }
        self.admitted.push(now, ask.tokens);
        self.stats.peak_admitted_per_window = self.admitted.peak_len();
        let limits = self.report(now);

        let roll = splitmix64(ask.request_hash ^ splitmix64(self.counter));
        let b = &self.behaviour;
        let fault = unit(roll);
        let mut bound = b.error_rate;
        if fault < bound {
            return Verdict::Internal;
        }
        bound += b.overloaded_rate;
        if fault < bound {
            return Verdict::Overloaded;
        }
        bound += b.rate_limit_rate;
        if fault < bound {
            return Verdict::Throttled {
                retry_after: scale(b.retry_after, clock.time_scale),
                limits,
            };
        }
        bound += b.hang_rate;
        if fault < bound {
            self.stats.hangs += 1;
            return Verdict::Hang;
        }

        let slow = unit(splitmix64(roll ^ 1)) < b.slow_first_byte_rate;
        let invalid_json = ask.json_mode && unit(splitmix64(roll ^ 2)) < b.invalid_json_rate;
        let slow_body = (unit(splitmix64(roll ^ 3)) < b.slow_body_rate)
            .then(|| scale(b.slow_body, clock.time_scale));
        if slow_body.is_some() {
            self.stats.slow_bodies += 1;
        }
        let decode = Duration::try_from_secs_f64(ask.output_tokens as f64 / b.tokens_per_second)
            .unwrap_or(Duration::MAX);
        let mut delay = b.ttft.saturating_add(decode);
        if slow {
            delay = delay.saturating_add(b.slow_first_byte);
        }
        Verdict::Serve {
            delay: scale(delay, clock.time_scale),
            invalid_json,
            slow_body,
            limits,
        }
    }

    /// Counts a request refused before admission (invalid key, unsupported parameter).
    pub(crate) fn record_refused(&mut self, status: u16) {
        self.stats.requests += 1;
        self.record_status(status);
    }

    fn report(&self, now: Instant) -> LimitReport {
        let reset = self.admitted.wait_until_empty(now);
        LimitReport {
            requests: self.behaviour.rpm.map(u64::from).map(|limit| Quota {
                limit,
                remaining: limit.saturating_sub(self.admitted.len()),
                reset,
            }),
            tokens: self.behaviour.tpm.map(u64::from).map(|limit| Quota {
                limit,
                remaining: limit.saturating_sub(self.admitted.weight()),
                reset,
            }),
        }
    }

    /// Counts an answer that was sent.
    pub(crate) fn record_status(&mut self, status: u16) {
        *self.stats.errors_by_status.entry(status).or_default() += 1;
    }

    /// Counts a successful, billed answer.
    pub(crate) fn record_success(&mut self, usage: &TokenUsage, invalid_json: bool) {
        self.stats.successes += 1;
        self.stats.usage.add(usage);
        if invalid_json {
            self.stats.invalid_json += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Outage;

    fn clock(now: Instant, elapsed_ms: u64) -> Clock {
        Clock {
            now,
            elapsed: Duration::from_millis(elapsed_ms),
            time_scale: 1.0,
        }
    }

    fn ask(hash: u64) -> Ask {
        Ask {
            request_hash: hash,
            tokens: 100,
            output_tokens: 50,
            json_mode: true,
        }
    }

    #[test]
    fn a_clean_model_serves_after_ttft_plus_decode_time() {
        let mut m = ModelState::new(
            ModelBehaviour {
                ttft: Duration::from_millis(200),
                tokens_per_second: 100.0,
                ..ModelBehaviour::default()
            },
            0.5,
        );
        let v = m.admit(
            Clock {
                time_scale: 0.5,
                ..clock(Instant::now(), 0)
            },
            ask(1),
        );
        assert_eq!(
            v,
            Verdict::Serve {
                delay: Duration::from_millis(350),
                invalid_json: false,
                slow_body: None,
                limits: LimitReport::default()
            }
        );
    }

    #[test]
    fn rpm_admits_the_limit_then_names_the_wait() {
        let t0 = Instant::now();
        let mut m = ModelState::new(
            ModelBehaviour {
                rpm: Some(2),
                ..ModelBehaviour::default()
            },
            1.0,
        );
        assert!(matches!(
            m.admit(clock(t0, 0), ask(1)),
            Verdict::Serve { .. }
        ));
        let second = m.admit(clock(t0 + Duration::from_secs(10), 10_000), ask(2));
        let Verdict::Serve { limits, .. } = second else {
            unreachable!("{second:?}")
        };
        assert_eq!(
            limits.requests,
            Some(Quota {
                limit: 2,
                remaining: 0,
                reset: Duration::from_secs(60)
            })
        );
        let third = m.admit(clock(t0 + Duration::from_secs(20), 20_000), ask(3));
        assert!(
            matches!(third, Verdict::Limited { scope: LimitScope::Requests, retry_after, used: 2, .. } if retry_after == Duration::from_secs(40))
        );
        assert!(matches!(
            m.admit(clock(t0 + Duration::from_secs(60), 60_000), ask(4)),
            Verdict::Serve { .. }
        ));
        assert_eq!(m.stats().peak_admitted_per_window, 2);
        assert_eq!(m.stats().peak_requests_per_window, 3);
    }

    #[test]
    fn tpm_counts_tokens() {
        let t0 = Instant::now();
        let mut m = ModelState::new(
            ModelBehaviour {
                tpm: Some(250),
                ..ModelBehaviour::default()
            },
            1.0,
        );
        assert!(matches!(
            m.admit(clock(t0, 0), ask(1)),
            Verdict::Serve { .. }
        ));
        assert!(matches!(
            m.admit(clock(t0, 0), ask(2)),
            Verdict::Serve { .. }
        ));
        assert!(matches!(
            m.admit(clock(t0, 0), ask(3)),
            Verdict::Limited {
                scope: LimitScope::Tokens,
                used: 200,
                requested: 100,
                ..
            }
        ));
    }

    #[test]
    fn outages_come_before_everything() {
        let t0 = Instant::now();
        let b = ModelBehaviour {
            error_rate: 1.0,
            outages: vec![Outage {
                start: Duration::from_secs(1),
                duration: Duration::from_secs(1),
                status: 529,
            }],
            ..ModelBehaviour::default()
        };
        let mut m = ModelState::new(b, 1.0);
        assert_eq!(m.admit(clock(t0, 0), ask(1)), Verdict::Internal);
        assert_eq!(
            m.admit(clock(t0, 1500), ask(1)),
            Verdict::Outage { status: 529 }
        );
        m.set_outage(Some(503));
        assert_eq!(
            m.admit(clock(t0, 0), ask(1)),
            Verdict::Outage { status: 503 }
        );
        m.set_outage(None);
        assert_eq!(m.admit(clock(t0, 0), ask(1)), Verdict::Internal);
    }

    #[test]
    fn rates_are_honoured_and_reproducible() {
        let b = ModelBehaviour {
            error_rate: 0.2,
            overloaded_rate: 0.1,
            rate_limit_rate: 0.1,
            hang_rate: 0.1,
            invalid_json_rate: 0.5,
            ..ModelBehaviour::default()
        };
        let run = || {
            let mut m = ModelState::new(b.clone(), 1.0);
            (0..2000u64)
                .map(|i| m.admit(clock(Instant::now(), 0), ask(i.wrapping_mul(0x9e37))))
                .collect::<Vec<_>>()
        };
        let verdicts = run();
        let count = |f: &dyn Fn(&Verdict) -> bool| verdicts.iter().filter(|v| f(v)).count();
        let near = |n: usize, expected: usize| n.abs_diff(expected) < expected / 4;
        assert!(near(count(&|v| *v == Verdict::Internal), 400));
        assert!(near(count(&|v| *v == Verdict::Overloaded), 200));
        assert!(near(
            count(&|v| matches!(v, Verdict::Throttled { .. })),
            200
        ));
        assert!(near(count(&|v| *v == Verdict::Hang), 200));
        assert!(near(
            count(&|v| matches!(
                v,
                Verdict::Serve {
                    invalid_json: true,
                    ..
                }
            )),
            500
        ));
        let again = run();
        assert_eq!(verdicts.len(), again.len());
        assert!(
            verdicts
                .iter()
                .zip(&again)
                .all(|(a, b)| std::mem::discriminant(a) == std::mem::discriminant(b))
        );
    }
}

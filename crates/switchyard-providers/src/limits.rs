//! Rate limits per deployment: requests per minute and tokens per minute, so a
//! worker never sends what the provider would refuse. Jobs wait for capacity; a job
//! whose deadline would pass while waiting is told so and moves to its next
//! deployment, and so does a call larger than the whole token limit, which could
//! never be sent there. When the provider says it is out of capacity
//! (remaining-requests/tokens headers at zero, a 429 with Retry-After or reset
//! headers) the deployment pauses for the time it asked; a 429 without any hint
//! pauses it with exponential backoff.
//!
//! Requests: a governor token bucket. A bucket with burst `b` and rate `r` per
//! window can admit `b + r` calls in one sliding window, so the limiter uses a
//! burst of a tenth of the limit and a rate of the rest: never more than the limit
//! in any window (a minute, unless the deployment says otherwise).
//!
//! The provider counts calls when they arrive, not when the worker let them go:
//! two calls admitted a window apart can arrive closer together when the first
//! was slowed on its way (a busy core, a new connection). So both limits count
//! over the window plus a delivery margin, [`delivery_margin`]: 5% of the
//! window, at least 250 ms and at most a tenth of it.
//!
//! Tokens: a sliding-window ledger. Each call reserves its whole estimate at once,
//! and is admitted only when the tokens of the calls admitted in the last window
//! plus its own fit the limit, so the tokens sent in any window never exceed it,
//! however large a call is. Waiting calls are served in arrival order, so a large
//! call is not starved by small ones. After the call, the billed count settles the
//! reservation: tokens billed beyond it are recorded as spent when they became
//! known (never dropped), and an estimate that was too high is given back.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use switchyard_core::backoff::Backoff;
use tokio::time::Instant;

use crate::RateLimitInfo;

/// Why the limiter will not let a call through to this deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitWait {
    /// The provider paused the deployment for longer than a job waits on one
    /// deployment (`routing.retry.max_retry_after`): the next deployment of the
    /// chain takes the call.
    #[error(
        "the provider paused this deployment for {wait:?}, longer than a job waits on one deployment ({max:?}, routing.retry.max_retry_after)"
    )]
    Paused {
        /// How long the pause still lasts.
        wait: Duration,
        /// The longest wait allowed.
        max: Duration,
    },
    /// Capacity would come back only after the job's deadline.
    #[error(
        "the deployment's rate limit would hold the call for {wait:?}, past the job's deadline"
    )]
    PastDeadline {
        /// How long it would have waited.
        wait: Duration,
    },
    /// The call alone is larger than the deployment's token limit.
    #[error(
        "the call needs about {tokens} tokens, more than this deployment's limit of {limit} tokens per {window:?}; it can never be sent here"
    )]
    TooLarge {
        /// Tokens reserved for the call (prompt plus the answer's cap).
        tokens: u64,
        /// This worker's token limit per window.
        limit: u64,
        /// The window.
        window: Duration,
    },
}

impl LimitWait {
    /// The wait that was refused, when it was a wait.
    pub fn wait(&self) -> Option<Duration> {
        match self {
            LimitWait::PastDeadline { wait } | LimitWait::Paused { wait, .. } => Some(*wait),
            LimitWait::TooLarge { .. } => None,
        }
    }
}

/// Tokens set aside for one call; settle it with [`DeploymentLimiter::correct`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    id: u64,
    tokens: u64,
}

impl Reservation {
    /// Tokens reserved (zero when the deployment has no token limit).
    pub fn tokens(&self) -> u64 {
        self.tokens
    }
}

/// One deployment's limits.
#[derive(Debug)]
pub struct DeploymentLimiter {
    requests: Option<DefaultDirectRateLimiter>,
    tokens: Option<TokenWindow>,
    paused_until: Mutex<Option<Instant>>,
    /// 429s without a hint since the last success.
    throttle_streak: AtomicU32,
    /// First and largest pause after a 429 without a hint.
    throttle_backoff: Backoff,
    /// Longest provider-asked pause a call waits out here before the caller
    /// moves on to another deployment.
    max_pause: Duration,
    clock: DefaultClock,
}

/// How long a call waits out a provider-asked pause before failing over, when
/// the deployment does not say (`routing.retry.max_retry_after`'s default).
pub const DEFAULT_MAX_PAUSE: Duration = Duration::from_secs(60);

/// How much longer than the provider's window the limiter counts over, so that
/// calls delayed on their way still arrive within the provider's limit.
pub fn delivery_margin(window: Duration) -> Duration {
    (window / 20)
        .max(Duration::from_millis(250))
        .min(window / 10)
}

/// Bucket for `limit` per `window`: a tenth as burst, the rest as steady rate.
fn bucket(limit: u32, window: Duration) -> Option<DefaultDirectRateLimiter> {
    let limit = NonZeroU32::new(limit)?;
    let burst = NonZeroU32::new((limit.get() / 10).max(1))?;
    let rate = limit.get().saturating_sub(burst.get()).max(1);
    let quota = Quota::with_period(window.div_f64(f64::from(rate)))?.allow_burst(burst);
    Some(RateLimiter::direct(quota))
}

impl DeploymentLimiter {
    /// Limits per minute, scaled by this worker's `share` of the key.
    pub fn new(rpm: Option<u32>, tpm: Option<u32>, share: f64) -> Self {
        Self::with_window(rpm, tpm, share, Duration::from_secs(60))
    }

    /// Limits per `window`, scaled by this worker's `share` of the key.
    pub fn with_window(rpm: Option<u32>, tpm: Option<u32>, share: f64, window: Duration) -> Self {
        let scale = |x: u32| ((f64::from(x) * share).floor() as u32).max(1);
        let counted = window + delivery_margin(window);
        Self {
            requests: rpm.map(scale).and_then(|l| bucket(l, counted)),
            tokens: tpm
                .map(scale)
                .filter(|l| *l > 0)
                .map(|l| TokenWindow::new(u64::from(l), window, counted)),
            paused_until: Mutex::new(None),
            throttle_streak: AtomicU32::new(0),
            // 500 ms to 30 s for a one-minute window.
            throttle_backoff: Backoff::new(window / 120, window / 2),
            max_pause: DEFAULT_MAX_PAUSE,
            clock: DefaultClock::default(),
        }
    }

    /// Calls do not wait out a provider-asked pause longer than `max`: they are
    /// refused with [`LimitWait::Paused`] so that the job fails over.
    pub fn with_max_pause(mut self, max: Duration) -> Self {
        self.max_pause = max;
        self
    }

    /// No limits at all.
    pub fn unlimited() -> Self {
        Self::new(None, None, 1.0)
    }

    /// This worker's token limit per window, if any.
    pub fn token_limit(&self) -> Option<u64> {
        self.tokens.as_ref().map(|t| t.limit)
    }

    /// Waits until a call of about `tokens` tokens may go, unless that would pass
    /// `deadline` or the call could never fit the token limit.
    pub async fn acquire(
        &self,
        tokens: u32,
        deadline: Option<Instant>,
    ) -> Result<Reservation, LimitWait> {
        let tokens = u64::from(tokens);
        if let Some(w) = &self.tokens
            && tokens > w.limit
        {
            return Err(LimitWait::TooLarge {
                tokens,
                limit: w.limit,
                window: w.window,
            });
        }
        self.wait_out_pause(deadline).await?;
        // Tokens before a request slot: the token wait can last a whole window,
        // and a slot taken before it would let calls held by it go together
        // later, over the request limit.
        let reservation = match &self.tokens {
            Some(w) => w.reserve(tokens, deadline).await?,
            None => Reservation { id: 0, tokens: 0 },
        };
        let refused = |e: LimitWait| {
            if let Some(w) = &self.tokens {
                w.settle(reservation, 0, Instant::now());
            }
            e
        };
        if let Some(req) = &self.requests {
            while let Err(not_until) = req.check() {
                let wait = not_until.wait_time_from(self.clock.now());
                past_deadline(deadline, wait).map_err(refused)?;
                tokio::time::sleep(jitter(wait)).await;
            }
        }
        // A pause the provider asked for while this call waited holds it too.
        self.wait_out_pause(deadline).await.map_err(refused)?;
        Ok(reservation)
    }

    /// Waits while the provider has asked the deployment to pause.
    async fn wait_out_pause(&self, deadline: Option<Instant>) -> Result<(), LimitWait> {
        while let Some(until) = self.paused_until() {
            let wait = until - Instant::now();
            if wait > self.max_pause {
                return Err(LimitWait::Paused {
                    wait,
                    max: self.max_pause,
                });
            }
            past_deadline(deadline, wait)?;
            tokio::time::sleep(jitter(wait)).await;
        }
        Ok(())
    }

    /// Settles a reservation with the tokens actually billed: any excess counts as
    /// spent now, any surplus is given back. Skip it when the outcome is unknown (a
    /// timeout or a lost connection): the reservation then stands.
    pub fn correct(&self, reservation: Reservation, billed: u64) {
        if let Some(w) = &self.tokens {
            w.settle(reservation, billed, Instant::now());
        }
    }

    /// Pauses the deployment for `wait` (the longest pause asked for wins),
    /// at most a day.
    pub fn pause_for(&self, wait: Duration) {
        let until = Instant::now() + wait.min(crate::wire::MAX_HINT);
        if let Ok(mut p) = self.paused_until.lock() {
            *p = Some(p.map_or(until, |cur| cur.max(until)));
        }
    }

    /// A 429 arrived. With the provider's hint (Retry-After, reset headers) the
    /// deployment pauses for that long; without one, for an exponentially growing
    /// pause (a half to the whole of `base · 2^n`, capped), so every job on the
    /// deployment slows down, not only the one that was refused. 429s arriving while
    /// the deployment is already paused (calls sent before the pause) do not grow
    /// it further. Returns the pause.
    pub fn throttled(&self, hint: Option<Duration>) -> Duration {
        if let Some(wait) = hint {
            self.pause_for(wait);
            return wait;
        }
        if let Some(until) = self.paused_until() {
            return until - Instant::now();
        }
        let n = self.throttle_streak.fetch_add(1, Ordering::AcqRel);
        let wait = self
            .throttle_backoff
            .jittered(n, 0.5, rand::rng().random_range(0.0..=1.0));
        self.pause_for(wait);
        wait
    }

    /// Learns from a successful response: the backoff of hint-less 429s starts
    /// over, and a limit at zero (remaining-requests or -tokens headers) pauses the
    /// deployment until its window resets.
    pub fn observe(&self, info: &RateLimitInfo) {
        self.throttle_streak.store(0, Ordering::Release);
        if let Some(wait) = info.exhausted_for() {
            self.pause_for(wait);
        }
    }

    /// When the deployment is paused until, if it is.
    pub fn paused_until(&self) -> Option<Instant> {
        self.paused_until
            .lock()
            .ok()
            .and_then(|p| *p)
            .filter(|u| *u > Instant::now())
    }
}

fn past_deadline(deadline: Option<Instant>, wait: Duration) -> Result<(), LimitWait> {
    match deadline {
        Some(d) if Instant::now() + wait > d => Err(LimitWait::PastDeadline { wait }),
        _ => Ok(()),
    }
}

/// Up to 10% extra wait, so callers woken together do not stampede.
fn jitter(wait: Duration) -> Duration {
    let extra = rand::rng().random_range(0.0..=0.1);
    wait + wait.mul_f64(extra) + Duration::from_millis(1)
}

/// Tokens admitted over a sliding window.
#[derive(Debug)]
struct TokenWindow {
    limit: u64,
    /// The provider's window, as configured.
    window: Duration,
    /// The window plus the delivery margin: what the ledger counts over.
    counted: Duration,
    /// Held by the call whose turn it is to be admitted (tokio's mutex is fair).
    turn: tokio::sync::Mutex<()>,
    ledger: Mutex<Ledger>,
}

#[derive(Debug, Default)]
struct Ledger {
    /// Admitted reservations and settled debts, oldest first.
    entries: VecDeque<Entry>,
    /// Sum of the entries' tokens.
    used: u64,
    next_id: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    at: Instant,
    id: u64,
    tokens: u64,
}

impl Ledger {
    fn prune(&mut self, now: Instant, window: Duration) {
        while let Some(e) = self.entries.front() {
            if e.at + window > now {
                break;
            }
            self.used -= e.tokens;
            self.entries.pop_front();
        }
    }

    fn push(&mut self, at: Instant, tokens: u64) -> u64 {
        self.next_id += 1;
        self.entries.push_back(Entry {
            at,
            id: self.next_id,
            tokens,
        });
        self.used += tokens;
        self.next_id
    }

    /// How long until `tokens` more fit under `limit` (zero when they fit now).
    fn wait_for(&self, now: Instant, tokens: u64, limit: u64, window: Duration) -> Duration {
        let mut used = self.used;
        if used + tokens <= limit {
            return Duration::ZERO;
        }
        for e in &self.entries {
            used -= e.tokens;
            if used + tokens <= limit {
                return (e.at + window).saturating_duration_since(now);
            }
        }
        window
    }
}

impl TokenWindow {
    fn new(limit: u64, window: Duration, counted: Duration) -> Self {
        Self {
            limit,
            window,
            counted,
            turn: tokio::sync::Mutex::new(()),
            ledger: Mutex::new(Ledger::default()),
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits `tokens` now if they fit, else says how long until they would.
    fn try_take(&self, tokens: u64) -> Result<Reservation, Duration> {
        let now = Instant::now();
        let mut l = self.ledger();
        l.prune(now, self.counted);
        match l.wait_for(now, tokens, self.limit, self.counted) {
            Duration::ZERO => Ok(Reservation {
                id: l.push(now, tokens),
                tokens,
            }),
            wait => Err(wait),
        }
    }

    async fn reserve(
        &self,
        tokens: u64,
        deadline: Option<Instant>,
    ) -> Result<Reservation, LimitWait> {
        let turn = match self.turn.try_lock() {
            Ok(turn) => turn,
            Err(_) => {
                // Others are waiting: if even an empty queue would hold this call
                // past its deadline, say so now; else queue behind them.
                let wait = self.try_wait(tokens);
                past_deadline(deadline, wait)?;
                match deadline {
                    Some(d) => {
                        tokio::time::timeout_at(d, self.turn.lock())
                            .await
                            .map_err(|_| LimitWait::PastDeadline {
                                wait: d.saturating_duration_since(Instant::now()) + wait,
                            })?
                    }
                    None => self.turn.lock().await,
                }
            }
        };
        loop {
            match self.try_take(tokens) {
                Ok(r) => {
                    drop(turn);
                    return Ok(r);
                }
                Err(wait) => {
                    past_deadline(deadline, wait)?;
                    tokio::time::sleep(wait + Duration::from_millis(1)).await;
                }
            }
        }
    }

    fn try_wait(&self, tokens: u64) -> Duration {
        let now = Instant::now();
        let mut l = self.ledger();
        l.prune(now, self.counted);
        l.wait_for(now, tokens, self.limit, self.counted)
    }

    fn settle(&self, r: Reservation, billed: u64, now: Instant) {
        let mut l = self.ledger();
        l.prune(now, self.counted);
        if billed > r.tokens {
            // Spent beyond the estimate: it counts from now, for a whole window.
            l.push(now, billed - r.tokens);
        } else if billed < r.tokens
            && let Ok(i) = l.entries.binary_search_by_key(&r.id, |e| e.id)
        {
            let back = (r.tokens - billed).min(l.entries[i].tokens);
            l.entries[i].tokens -= back;
            l.used -= back;
        }
    }

    #[cfg(test)]
    fn used(&self) -> u64 {
        let mut l = self.ledger();
        l.prune(Instant::now(), self.counted);
        l.used
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn no_more_than_the_limit_passes_in_a_burst() {
        let l = DeploymentLimiter::new(Some(600), None, 1.0);
        let deadline = Some(Instant::now() + Duration::from_millis(20));
        let mut admitted = 0;
        for _ in 0..200 {
            if l.acquire(1, deadline).await.is_ok() {
                admitted += 1;
            }
        }
        // Burst of 60, then one every 0.111 s: at most a couple more within 20 ms.
        assert!((60..=62).contains(&admitted), "{admitted}");
    }

    #[test]
    fn the_delivery_margin_is_a_twentieth_within_bounds() {
        let ms = Duration::from_millis;
        assert_eq!(delivery_margin(Duration::from_secs(60)), ms(3_000));
        assert_eq!(delivery_margin(Duration::from_secs(3)), ms(250));
        assert_eq!(delivery_margin(Duration::from_secs(1)), ms(100));
    }

    #[tokio::test]
    async fn shares_scale_the_limits() {
        let l = DeploymentLimiter::new(Some(600), None, 0.5);
        let deadline = Some(Instant::now() + Duration::from_millis(5));
        let mut admitted = 0;
        for _ in 0..100 {
            if l.acquire(1, deadline).await.is_ok() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 30);
        assert_eq!(
            DeploymentLimiter::new(None, Some(50_000), 0.25).token_limit(),
            Some(12_500)
        );
    }

    #[tokio::test]
    async fn pauses_hold_calls_until_they_end_or_the_deadline() {
        let l = DeploymentLimiter::unlimited();
        l.pause_for(Duration::from_secs(30));
        let e = l
            .acquire(10, Some(Instant::now() + Duration::from_secs(1)))
            .await
            .unwrap_err();
        assert!(e.wait().unwrap() > Duration::from_secs(28));
        l.observe(&RateLimitInfo {
            remaining_requests: Some(0),
            reset_requests: Some(Duration::from_secs(90)),
            ..Default::default()
        });
        assert!(l.paused_until().unwrap() > Instant::now() + Duration::from_secs(80));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_larger_than_a_tenth_of_the_limit_reserves_all_of_it() {
        // TPM 50,000: a 20,000-token call takes 20,000, not a burst-sized part.
        let l = DeploymentLimiter::new(None, Some(50_000), 1.0);
        let t0 = Instant::now();
        let a = l.acquire(20_000, None).await.unwrap();
        let b = l.acquire(20_000, None).await.unwrap();
        assert_eq!((a.tokens(), b.tokens()), (20_000, 20_000));
        assert_eq!(l.tokens.as_ref().unwrap().used(), 40_000);
        assert_eq!(t0.elapsed(), Duration::ZERO, "40,000 of 50,000 fit at once");
        // A third does not fit until the first leaves the window and its
        // delivery margin, 63 s later.
        assert_eq!(
            delivery_margin(Duration::from_secs(60)),
            Duration::from_secs(3)
        );
        let soon = Some(t0 + Duration::from_secs(62));
        assert_eq!(
            l.acquire(20_000, soon).await.unwrap_err(),
            LimitWait::PastDeadline {
                wait: Duration::from_secs(63)
            }
        );
        let c = l.acquire(20_000, None).await.unwrap();
        assert!(
            t0.elapsed() >= Duration::from_secs(63),
            "{:?}",
            t0.elapsed()
        );
        assert!(t0.elapsed() < Duration::from_millis(63_010));
        assert_eq!(c.tokens(), 20_000);
        assert_eq!(l.tokens.as_ref().unwrap().used(), 20_000);
    }

    #[tokio::test(start_paused = true)]
    async fn billed_tokens_settle_the_reservation_exactly() {
        let l = DeploymentLimiter::new(None, Some(50_000), 1.0);
        let w = l.tokens.as_ref().unwrap();
        // Reserved 20,000, billed 35,000: the 15,000 beyond are owed in full.
        let r = l.acquire(20_000, None).await.unwrap();
        l.correct(r, 35_000);
        assert_eq!(w.used(), 35_000);
        // Reserved 10,000, billed 1,200: 8,800 come back.
        let r = l.acquire(10_000, None).await.unwrap();
        l.correct(r, 1_200);
        assert_eq!(w.used(), 36_200);
        let now = Some(Instant::now() + Duration::from_millis(1));
        assert!(l.acquire(13_800, now).await.is_ok(), "50,000 exactly");
        assert!(l.acquire(1, now).await.is_err(), "and not one more");
        // A debt far above any burst is never dropped: 200,000 billed on a
        // 50,000 reservation holds the deployment for a whole window.
        let l = DeploymentLimiter::new(None, Some(50_000), 1.0);
        let t0 = Instant::now();
        tokio::time::advance(Duration::from_secs(1)).await;
        let r = l.acquire(50_000, None).await.unwrap();
        tokio::time::advance(Duration::from_secs(30)).await;
        l.correct(r, 250_000);
        assert_eq!(l.tokens.as_ref().unwrap().used(), 250_000);
        let next = l.acquire(1_000, None).await.unwrap();
        assert_eq!(next.tokens(), 1_000);
        assert!(
            t0.elapsed() >= Duration::from_secs(91),
            "admitted only once the debt left the window: {:?}",
            t0.elapsed()
        );
    }

    #[tokio::test]
    async fn a_call_larger_than_the_whole_limit_is_refused_at_once() {
        let l = DeploymentLimiter::new(Some(100), Some(50_000), 1.0);
        let e = l.acquire(60_000, None).await.unwrap_err();
        assert_eq!(
            e,
            LimitWait::TooLarge {
                tokens: 60_000,
                limit: 50_000,
                window: Duration::from_secs(60)
            }
        );
        assert!(
            e.to_string()
                .contains("more than this deployment's limit of 50000 tokens")
        );
        assert!(
            l.acquire(50_000, None).await.is_ok(),
            "the limit itself fits"
        );
    }

    /// Sixty concurrent callers with calls of 6,000 to 30,000 tokens (the old
    /// burst was 5,000) against TPM 50,000, arriving faster than the limit allows.
    /// Every call gets through, and in every 60 s window the tokens admitted (each
    /// call counted at admission with what it was finally billed, never more than
    /// it reserved) stay within the limit.
    #[tokio::test(start_paused = true)]
    async fn no_window_ever_admits_more_than_the_limit() {
        const LIMIT: u64 = 50_000;
        let l = Arc::new(DeploymentLimiter::new(None, Some(50_000), 1.0));
        let log = Arc::new(Mutex::new(Vec::<(Instant, u64)>::new()));
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..60u64 {
            let (l, log) = (l.clone(), log.clone());
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i * 700)).await;
                let want = 6_000 + (i * 7_919) % 24_001;
                let r = l.acquire(u32::try_from(want).unwrap(), None).await.unwrap();
                let at = Instant::now();
                // A third of the calls bill far less than they reserved.
                let billed = if i % 3 == 0 { want / 4 } else { want };
                log.lock().unwrap().push((at, billed));
                tokio::time::sleep(Duration::from_millis(1_500 + i * 37)).await;
                l.correct(r, billed);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let log = log.lock().unwrap().clone();
        assert_eq!(log.len(), 60);
        let total: u64 = log.iter().map(|(_, t)| t).sum();
        let mut worst = 0;
        for (start, _) in &log {
            let end = *start + Duration::from_secs(60);
            let sum: u64 = log
                .iter()
                .filter(|(at, _)| at >= start && *at < end)
                .map(|(_, t)| *t)
                .sum();
            worst = worst.max(sum);
        }
        assert!(worst <= LIMIT, "{worst} tokens admitted in one window");
        // Billed tokens cannot flow faster than the limit either.
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_secs(60 * (total / LIMIT - 1)),
            "{total} tokens billed in {took:?}"
        );
    }
}

//! Live health of every deployment (EWMA latency, error rate, circuit breaker),
//! indexed like the router's deployment table: admission reads snapshots of it,
//! dispatch asks it for permission to call and tells it how each call went.

use parking_lot::Mutex;
use switchyard_core::health::{
    CallOutcome, CircuitState, DeploymentHealth, HealthConfig, HealthSnapshot,
};
use switchyard_core::routing::DeploymentId;

/// One cell per deployment. The locks cannot poison: a panic elsewhere never
/// turns a deployment's health into "unknown".
pub struct HealthTable {
    cells: Vec<Mutex<DeploymentHealth>>,
}

impl HealthTable {
    pub(crate) fn new(n: usize, cfg: HealthConfig) -> Self {
        Self {
            cells: (0..n)
                .map(|_| Mutex::new(DeploymentHealth::new(cfg)))
                .collect(),
        }
    }

    fn now() -> std::time::Instant {
        tokio::time::Instant::now().into_std()
    }

    /// Snapshot for routing.
    pub fn snapshot(&self, d: DeploymentId) -> HealthSnapshot {
        self.cells
            .get(d)
            .map_or_else(HealthSnapshot::fresh, |c| c.lock().snapshot(Self::now()))
    }

    /// A slot for one call to the deployment, when its circuit lets one
    /// through now (a half-open circuit lets a few probes through at a time).
    pub(crate) fn call_slot(&self, d: DeploymentId) -> Option<CallSlot<'_>> {
        let allowed = self
            .cells
            .get(d)
            .is_none_or(|c| c.lock().try_acquire(Self::now()));
        allowed.then_some(CallSlot {
            table: self,
            deployment: d,
            recorded: false,
        })
    }

    /// Records how a call went; returns the circuit's new state when it changed.
    pub(crate) fn record(&self, d: DeploymentId, outcome: CallOutcome) -> Option<CircuitState> {
        self.cells
            .get(d)
            .and_then(|c| c.lock().record(Self::now(), outcome))
    }
}

/// A call the circuit breaker let through. Recording how it went frees the
/// slot; a slot dropped unrecorded (the call's task was aborted or panicked)
/// is recorded as neutral, so a half-open circuit never loses a probe slot.
pub(crate) struct CallSlot<'a> {
    table: &'a HealthTable,
    deployment: DeploymentId,
    recorded: bool,
}

impl CallSlot<'_> {
    /// Records how the call went; returns the circuit's new state when it changed.
    pub(crate) fn record(mut self, outcome: CallOutcome) -> Option<CircuitState> {
        self.recorded = true;
        self.table.record(self.deployment, outcome)
    }
}

impl Drop for CallSlot<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.table.record(self.deployment, CallOutcome::Neutral);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use switchyard_core::health::CircuitState;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_probe_slot_dropped_unrecorded_is_given_back() {
        let cfg = HealthConfig {
            half_open_probes: 1,
            ..HealthConfig::default()
        };
        let table = HealthTable::new(1, cfg);
        for _ in 0..cfg.failure_threshold {
            table.call_slot(0).unwrap().record(CallOutcome::Failure);
        }
        assert_eq!(table.snapshot(0).circuit, CircuitState::Open);
        tokio::time::advance(cfg.open_for + Duration::from_millis(1)).await;
        // The one probe slot, taken by a call whose task dies (no record).
        let probe = table.call_slot(0).expect("a probe may go");
        assert!(table.call_slot(0).is_none(), "only one probe at a time");
        drop(probe);
        assert!(
            table.call_slot(0).is_some(),
            "the probe slot of a call that never recorded was lost"
        );
    }
}

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

    /// Whether a call may go to the deployment now (a half-open circuit lets
    /// one probe through at a time).
    pub(crate) fn try_acquire(&self, d: DeploymentId) -> bool {
        self.cells
            .get(d)
            .is_none_or(|c| c.lock().try_acquire(Self::now()))
    }

    /// Records how a call went; returns the circuit's new state when it changed.
    pub(crate) fn record(&self, d: DeploymentId, outcome: CallOutcome) -> Option<CircuitState> {
        self.cells
            .get(d)
            .and_then(|c| c.lock().record(Self::now(), outcome))
    }
}

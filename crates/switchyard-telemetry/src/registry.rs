//! [`Telemetry`]: what a process exposes. Components register renderers
//! (each writes whole families into the exposition) and named readiness
//! checks; a scrape runs every renderer in registration order, a readiness
//! probe runs every check. Nothing here holds a metric: the counters stay with
//! the components, which render them when asked.

use std::sync::Arc;

use crate::process::ProcessInfo;

/// Writes one or more whole metric families into the exposition. Called on
/// every scrape, so it reads its counters and returns promptly.
pub type Renderer = Arc<dyn Fn(&mut String) + Send + Sync>;

/// Says whether one part of the process is ready, and if not, why (a short
/// sentence for the `/readyz` body).
pub type ReadinessCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// A readiness check that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unready {
    /// The check's name.
    pub check: String,
    /// Why it is not ready.
    pub reason: String,
}

/// The renderers and readiness checks of one process.
#[derive(Clone, Default)]
pub struct Telemetry {
    renderers: Vec<Renderer>,
    checks: Vec<(String, ReadinessCheck)>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("renderers", &self.renderers.len())
            .field(
                "checks",
                &self.checks.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Telemetry {
    /// Telemetry with the process basics registered first (build info, start
    /// time, CPU and memory; see [`ProcessInfo`]).
    pub fn for_process(version: &str, component: &str) -> Self {
        let info = ProcessInfo::new(version, component);
        let mut t = Self::default();
        t.add_renderer(Arc::new(move |out: &mut String| info.render(out)));
        t
    }

    /// Adds a renderer; its families follow those of the renderers added before.
    pub fn add_renderer(&mut self, renderer: Renderer) -> &mut Self {
        self.renderers.push(renderer);
        self
    }

    /// Adds a readiness check under `name`.
    pub fn add_check(&mut self, name: impl Into<String>, check: ReadinessCheck) -> &mut Self {
        self.checks.push((name.into(), check));
        self
    }

    /// The exposition: every renderer's families, in registration order.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        for r in &self.renderers {
            r(&mut out);
        }
        out
    }

    /// Runs every readiness check; the failed ones, in registration order
    /// (empty when the process is ready).
    pub fn unready(&self) -> Vec<Unready> {
        self.checks
            .iter()
            .filter_map(|(name, check)| {
                check().err().map(|reason| Unready {
                    check: name.clone(),
                    reason,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::exposition::Family;

    #[test]
    fn renderers_run_in_order_after_the_process_basics() {
        let mut t = Telemetry::for_process("0.1.0", "worker");
        t.add_renderer(Arc::new(|out: &mut String| {
            Family::gauge(out, "first", "First.").sample(&[], 1.0);
        }))
        .add_renderer(Arc::new(|out: &mut String| {
            Family::gauge(out, "second", "Second.").sample(&[], 2.0);
        }));
        let text = t.render();
        let build = text.find("# TYPE switchyard_build_info gauge").unwrap();
        let first = text.find("# TYPE first gauge").unwrap();
        let second = text.find("# TYPE second gauge").unwrap();
        assert!(build < first && first < second, "{text}");
    }

    #[test]
    fn unready_lists_the_failing_checks_by_name() {
        let ready = Arc::new(AtomicBool::new(false));
        let flag = ready.clone();
        let mut t = Telemetry::default();
        t.add_check("alive", Arc::new(|| Ok(()))).add_check(
            "group",
            Arc::new(move || {
                if flag.load(Ordering::Relaxed) {
                    Ok(())
                } else {
                    Err("no partitions assigned yet".into())
                }
            }),
        );
        assert_eq!(
            t.unready(),
            [Unready {
                check: "group".into(),
                reason: "no partitions assigned yet".into()
            }]
        );
        ready.store(true, Ordering::Relaxed);
        assert!(t.unready().is_empty());
    }
}

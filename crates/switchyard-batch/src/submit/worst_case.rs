//! The batch's worst case, priced in `submit`'s first pass when the project's
//! policy holds work above `approval_required_above_usd`: the sum over its
//! jobs of [`Router::worst_case_bound`], the most each job may cost on any
//! model it could be routed to, which admission's per-job worst case never
//! exceeds. Every job carries the sum ([`Job::stamp_batch_worst_case`]), so
//! whichever worker admits one of them weighs the whole batch against the
//! threshold, whatever it has read of the registry yet.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use switchyard_core::analysis::TaskAnalyzer;
use switchyard_core::config::LoadedPipeline;
use switchyard_core::job::Job;
use switchyard_core::org::EffectivePolicy;
use switchyard_core::routing::{BudgetState, RouteInput, Router};

/// The running sum of a batch's worst case.
pub(super) struct BatchWorstCase<'a> {
    router: Router,
    analyzer: TaskAnalyzer,
    policy: &'a EffectivePolicy,
    now: DateTime<Utc>,
    total_usd: f64,
}

impl<'a> BatchWorstCase<'a> {
    /// A pricer for a batch of `project` (and `workload`); `None` when no node
    /// of its path sets an approval threshold (nothing weighs the figure then,
    /// and analysing every line would slow `submit` for nothing).
    pub fn for_project(
        pipeline: &'a LoadedPipeline,
        project: &str,
        workload: Option<&str>,
    ) -> Option<Self> {
        let policy = pipeline.org.policy(project, workload).ok()?;
        policy.approval_required_above_usd?;
        Some(Self {
            router: Router::for_pipeline(Arc::new(pipeline.catalog.clone()), &pipeline.config),
            analyzer: TaskAnalyzer::for_pipeline(pipeline),
            policy,
            now: Utc::now(),
            total_usd: 0.0,
        })
    }

    /// Adds one job, analysed as the worker will analyse it. A job no model
    /// could take adds nothing: the worker refuses it without a call.
    pub fn add(&mut self, job: &Job) {
        let analysis = self
            .analyzer
            .analyze_for(job, self.policy.quality_target, false);
        let input = RouteInput {
            job,
            analysis: &analysis,
            policy: self.policy,
            budget: BudgetState::UNCONSTRAINED,
            now: self.now,
        };
        self.total_usd += self.router.worst_case_bound(&input).unwrap_or(0.0);
    }

    /// The batch's worst case so far, USD.
    pub fn total_usd(&self) -> f64 {
        self.total_usd
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use switchyard_core::health::HealthSnapshot;
    use switchyard_core::job::ChatRequest;
    use switchyard_core::org::OrgTree;
    use switchyard_core::routing::Strategy;

    use super::*;

    const GATED: &str = "acme/bu/t/gated";

    /// The demo pipeline, with an org in which `acme/bu/t/gated` holds work
    /// above a cent and `acme/bu/t/open` holds nothing.
    fn pipeline() -> LoadedPipeline {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut p =
            switchyard_loader::load_pipeline(&root.join("pipelines/demo.toml"), &[]).unwrap();
        let org = format!(
            "[org]\nname = \"acme\"\n[[node]]\npath = \"acme/bu\"\n[[node]]\npath = \"acme/bu/t\"\n[[node]]\npath = \"{GATED}\"\napproval_required_above_usd = 0.01\n[[node]]\npath = \"acme/bu/t/open\"\n"
        );
        p.org =
            OrgTree::parse(Path::new("org.toml"), &org, &p.catalog, Strategy::Auto, 0.5).unwrap();
        p
    }

    fn job(i: usize) -> Job {
        Job::new(
            format!("j{i}"),
            GATED,
            ChatRequest {
                max_tokens: Some(200 * (i as u32 + 1)),
                ..ChatRequest::from_user(format!("Summarise report {i} for the board."))
            },
        )
    }

    #[test]
    fn a_batch_costs_at_least_what_admission_would_reserve_for_all_its_jobs() {
        let p = pipeline();
        assert!(BatchWorstCase::for_project(&p, "acme/bu/t/open", None).is_none());
        let mut priced = BatchWorstCase::for_project(&p, GATED, None).unwrap();
        let jobs: Vec<Job> = (0..5).map(job).collect();
        for j in &jobs {
            priced.add(j);
        }
        // Whatever strategy routes each job, its worst case (what admission
        // weighs and reserves) sums to no more than the batch's figure.
        let router = Router::for_pipeline(Arc::new(p.catalog.clone()), &p.config);
        let analyzer = TaskAnalyzer::for_pipeline(&p);
        let policy = p.org.policy(GATED, None).unwrap();
        let mut routed = 0.0;
        for j in &jobs {
            let analysis = analyzer.analyze_for(j, policy.quality_target, false);
            let dearest = Strategy::ALL
                .into_iter()
                .map(|s| {
                    let j = Job {
                        strategy: Some(s),
                        ..j.clone()
                    };
                    let input = RouteInput {
                        job: &j,
                        analysis: &analysis,
                        policy,
                        budget: BudgetState::UNCONSTRAINED,
                        now: Utc::now(),
                    };
                    router
                        .route(&input, &|_| HealthSnapshot::fresh(), false)
                        .unwrap()
                        .worst_case_usd()
                })
                .fold(0.0, f64::max);
            routed += dearest;
        }
        assert!(routed > 0.0);
        assert!(
            priced.total_usd() >= routed,
            "{} < {routed}",
            priced.total_usd()
        );
    }
}

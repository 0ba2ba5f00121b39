//! Grouping waiting jobs into provider batches. Jobs go together when they
//! wait for the same deployment and belong to the same Switchyard batch (so a
//! cancel reaches whole provider batches); a group is cut into provider
//! batches by the request-count and size limits, and a batch is created when
//! it is full, when its oldest job has gathered for `max_wait`, or when one of
//! its jobs must go now to be answered in time. A job that can no longer wait
//! for a provider's window, or has no deployment left to try, goes live; a job
//! of a canceled batch ends canceled.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::book::{Book, BookJob};

/// What grouping needs from the `[deferred]` config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanSettings {
    /// How long jobs gather before their batch is created.
    pub max_wait: Duration,
    /// The provider's completion window.
    pub completion_window: Duration,
    /// Room kept for a live failover after the window.
    pub margin: Duration,
    /// Most requests in one provider batch.
    pub max_requests: usize,
    /// Most bytes of requests in one provider batch.
    pub max_bytes: usize,
}

/// What to do with waiting jobs now.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Create a provider batch of these jobs (ids, oldest first) on `deployment`.
    Submit {
        /// Deployment whose batch API takes it.
        deployment: String,
        /// Their Switchyard batch, if any.
        batch_id: Option<String>,
        /// Job ids, oldest first.
        jobs: Vec<String>,
    },
    /// The job cannot wait for a provider batch any more: run it live.
    Live {
        /// The job.
        job_id: String,
        /// Why, for its result.
        why: String,
    },
    /// The job's Switchyard batch was canceled: end it canceled.
    Cancel {
        /// The job.
        job_id: String,
    },
}

/// The steps for `book`'s waiting jobs at `now`. `usable` says whether this
/// worker can reach a deployment's batch API; `canceled` whether a Switchyard
/// batch is canceled.
pub fn plan(
    book: &Book,
    now: DateTime<Utc>,
    settings: &PlanSettings,
    usable: &dyn Fn(&str) -> bool,
    canceled: &dyn Fn(&str) -> bool,
) -> Vec<Step> {
    let window = chrono_span(settings.completion_window);
    let go_by = window + chrono_span(settings.margin);
    let mut steps = Vec::new();
    let mut groups: BTreeMap<(String, Option<String>), Vec<&BookJob>> = BTreeMap::new();
    for job in book.waiting() {
        let r = &job.record;
        let id = &r.job.job_id;
        if r.job.batch_id.as_deref().is_some_and(canceled) {
            steps.push(Step::Cancel { job_id: id.clone() });
            continue;
        }
        let Some(deployment) = r.next_deployment(usable) else {
            let why = if r.tried.is_empty() {
                "no deployment of its chain can take a provider batch here".to_owned()
            } else {
                format!(
                    "the provider batches of {} failed it and no other batch deployment is left",
                    r.tried.join(", ")
                )
            };
            steps.push(Step::Live {
                job_id: id.clone(),
                why,
            });
            continue;
        };
        if r.due - now < window {
            steps.push(Step::Live {
                job_id: id.clone(),
                why: format!(
                    "its answer is due {} and a provider batch may take {}",
                    r.due.format("%Y-%m-%dT%H:%M:%SZ"),
                    humantime::format_duration(settings.completion_window)
                ),
            });
            continue;
        }
        groups
            .entry((deployment.to_owned(), r.job.batch_id.clone()))
            .or_default()
            .push(job);
    }
    for ((deployment, batch_id), mut jobs) in groups {
        jobs.sort_by(|a, b| {
            (a.record.deferred_at, a.offset).cmp(&(b.record.deferred_at, b.offset))
        });
        for chunk in chunks(&jobs, settings) {
            let full = chunk.len() >= settings.max_requests
                || bytes(&chunk) + max_request(&jobs) > settings.max_bytes as u64;
            let gathered = chunk
                .first()
                .is_some_and(|j| now - j.record.deferred_at >= chrono_span(settings.max_wait));
            let urgent = chunk.iter().any(|j| j.record.due - now <= go_by);
            if full || gathered || urgent {
                steps.push(Step::Submit {
                    deployment: deployment.clone(),
                    batch_id: batch_id.clone(),
                    jobs: chunk.iter().map(|j| j.record.job.job_id.clone()).collect(),
                });
            }
        }
    }
    steps
}

/// Cuts a group (oldest first) into provider batches within the limits.
fn chunks<'a>(jobs: &[&'a BookJob], settings: &PlanSettings) -> Vec<Vec<&'a BookJob>> {
    let mut out: Vec<Vec<&BookJob>> = Vec::new();
    let mut current: Vec<&BookJob> = Vec::new();
    let mut size = 0u64;
    for job in jobs {
        let b = job.record.request_bytes;
        if !current.is_empty()
            && (current.len() >= settings.max_requests || size + b > settings.max_bytes as u64)
        {
            out.push(std::mem::take(&mut current));
            size = 0;
        }
        size += b;
        current.push(job);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn bytes(jobs: &[&BookJob]) -> u64 {
    jobs.iter().map(|j| j.record.request_bytes).sum()
}

fn max_request(jobs: &[&BookJob]) -> u64 {
    jobs.iter()
        .map(|j| j.record.request_bytes)
        .max()
        .unwrap_or(0)
}

fn chrono_span(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

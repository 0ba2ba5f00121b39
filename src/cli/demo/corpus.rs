//! The demo workload: realistic prompts from `pipelines/corpus/prompts.jsonl`,
//! tagged with their workload and project, replayed as jobs in a seeded order.

use std::collections::BTreeMap;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use switchyard_core::job::{ChatMessage, ChatRequest, Job, ResponseFormat, Role};

use crate::cli::BadInput;

/// One corpus line.
#[derive(Debug, Clone, Deserialize)]
pub struct Prompt {
    /// Identifier.
    pub id: String,
    /// Labelled category.
    pub category: String,
    /// Labelled difficulty.
    pub difficulty: String,
    /// Workload it belongs to.
    pub workload: String,
    /// Optional system prompt.
    #[serde(default)]
    pub system: Option<String>,
    /// The user message.
    pub prompt: String,
    /// Answer cap.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// `json_object` when JSON output is required.
    #[serde(default)]
    pub response_format: Option<String>,
}

#[derive(Deserialize)]
struct Workloads {
    projects: BTreeMap<String, String>,
}

/// The corpus with its workload → project map.
pub struct Corpus {
    prompts: Vec<Prompt>,
    projects: BTreeMap<String, String>,
}

impl Corpus {
    /// Loads the corpus and the workloads file beside it.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = switchyard_loader::read_disk(path).map_err(|e| {
            BadInput(format!(
                "cannot read the demo corpus {}: {e}",
                path.display()
            ))
        })?;
        let prompts = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str::<Prompt>(l)
                    .map_err(|e| BadInput(format!("{}:{}: {e}", path.display(), i + 1)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let workloads_path = path.with_file_name("workloads.toml");
        let wtext = switchyard_loader::read_disk(&workloads_path)
            .map_err(|e| BadInput(format!("cannot read {}: {e}", workloads_path.display())))?;
        let workloads: Workloads = toml::from_str(&wtext)
            .map_err(|e| BadInput(format!("{}: {e}", workloads_path.display())))?;
        for p in &prompts {
            if !workloads.projects.contains_key(&p.workload) {
                return Err(BadInput(format!(
                    "{}: workload `{}` of {} has no project in {}",
                    path.display(),
                    p.workload,
                    p.id,
                    workloads_path.display()
                ))
                .into());
            }
        }
        if prompts.is_empty() {
            return Err(BadInput(format!("{} has no prompts", path.display())).into());
        }
        Ok(Self {
            prompts,
            projects: workloads.projects,
        })
    }

    /// `n` jobs drawn with replacement in a seeded order, ids `demo-000001`…
    pub fn jobs(&self, n: usize, seed: u64) -> Vec<(Job, &Prompt)> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|i| {
                let p = &self.prompts[rng.random_range(0..self.prompts.len())];
                let job = Job {
                    job_id: format!("demo-{:06}", i + 1),
                    batch_id: None,
                    project: self.projects[&p.workload].clone(),
                    workload: Some(p.workload.clone()),
                    strategy: None,
                    mode: None,
                    request: ChatRequest {
                        messages: vec![ChatMessage {
                            role: Role::User,
                            content: p.prompt.clone(),
                        }],
                        system: p.system.clone(),
                        max_tokens: p.max_tokens,
                        temperature: Some(0.2),
                        stop: vec![],
                        response_format: if p.response_format.as_deref() == Some("json_object") {
                            ResponseFormat::JsonObject
                        } else {
                            ResponseFormat::Text
                        },
                    },
                    model: None,
                    allowed_models: vec![],
                    deadline: None,
                    metadata: BTreeMap::from([("corpus_id".to_owned(), p.id.clone())]),
                };
                (job, p)
            })
            .collect()
    }
}

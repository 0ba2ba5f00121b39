//! The learned need estimate (`swneed-1`): for one prompt, the probability that
//! a cheap model falls short of what it needs. A logistic regression over
//! hashed word and byte n-grams and thirty dense structural features, with
//! disjoint weights for open-ended and multiple-choice prompts, each calibrated
//! by its own Platt pair. The model file, its features and its training are
//! specified in `docs/need-model.md`; `pipelines/need_model.md` is the shipped
//! model's card.
//!
//! Scoring allocates nothing once a thread's scratch buffers have grown: a
//! typical prompt takes a few microseconds. Like `switchyard-core`, this crate
//! does no I/O: model files arrive as bytes, training data as text. It is a crate
//! of its own so that its numeric loops are optimised in debug builds too
//! (training runs in seconds, not minutes, under `cargo test`).

pub mod calibrate;
pub mod features;
pub mod train;

use std::cell::RefCell;
use std::sync::{Arc, LazyLock};

use serde::Serialize;

pub use calibrate::Calibration;
use features::{BUCKETS, DENSE, DENSE_NAMES, DIM, KINDS, Scratch};

/// The format's magic bytes.
const MAGIC: &[u8; 8] = b"SWNEED01";
/// The feature version this code computes.
pub const VERSION: &str = "swneed-1";

/// The model shipped with Switchyard (`pipelines/need_model.bin`).
static BUILTIN_BYTES: &[u8] = include_bytes!("../../../pipelines/need_model.bin");

static BUILTIN: LazyLock<Result<Arc<NeedModel>, ModelError>> =
    LazyLock::new(|| NeedModel::parse(BUILTIN_BYTES).map(Arc::new));

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Why a model file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ModelError(pub String);

/// A trained need model: weights (stored as f32) and a Platt pair per kind,
/// with the metadata its file carries.
#[derive(Debug, Clone, PartialEq)]
pub struct NeedModel {
    weights: Vec<f32>,
    platt: [(f64, f64); KINDS],
    calibration: Option<Calibration>,
    header: serde_json::Map<String, serde_json::Value>,
}

/// The estimate for one prompt.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct NeedEstimate {
    /// Probability that a cheap model falls short.
    pub p: f64,
    /// The model's logit before calibration.
    pub logit: f64,
    /// `open` or `multiple-choice`: which half of the model scored it.
    pub kind: PromptKind,
    /// Bytes of the part of the prompt that was scored (few-shot examples stripped).
    pub task_bytes: usize,
    /// Few-shot answers stripped before scoring.
    pub shots: u32,
}

/// The structural kind of a prompt; each kind has its own weights and calibration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PromptKind {
    /// Open-ended.
    Open,
    /// Multiple choice (three or more of the options A–D, or "option 1 / option 2").
    MultipleChoice,
}

impl PromptKind {
    fn from_index(k: usize) -> Self {
        if k == 1 {
            PromptKind::MultipleChoice
        } else {
            PromptKind::Open
        }
    }
}

/// One feature's part in a logit, for explanations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contribution {
    /// `w1 "proof"`, `w2 "write a"`, `c4 " sql"` or a dense feature's name.
    pub feature: String,
    /// The feature's value.
    pub value: f64,
    /// Its weight.
    pub weight: f64,
    /// `value × weight`: how far it moved the logit.
    pub contribution: f64,
}

impl NeedModel {
    /// The model compiled into the binary.
    pub fn builtin() -> Result<Arc<NeedModel>, ModelError> {
        BUILTIN.clone()
    }

    /// Parses a model file, checking its magic, version, buckets, kinds, dense
    /// features and length.
    pub fn parse(bytes: &[u8]) -> Result<Self, ModelError> {
        let bad = |what: String| ModelError(what);
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err(bad(
                "not a need model (it does not start with SWNEED01)".into()
            ));
        }
        let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        let header = bytes
            .get(12..12 + len)
            .ok_or_else(|| bad("the header is cut short".into()))?;
        let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(header)
            .map_err(|e| bad(format!("the header is not a JSON object: {e}")))?;
        let field = |k: &str| header.get(k).cloned().unwrap_or(serde_json::Value::Null);
        if field("version") != VERSION {
            return Err(bad(format!(
                "feature version {} is not {VERSION}, the one this build computes",
                field("version")
            )));
        }
        if field("buckets") != BUCKETS || field("kinds") != KINDS {
            return Err(bad(format!(
                "{} buckets and {} kinds do not match this build's {BUCKETS} and {KINDS}",
                field("buckets"),
                field("kinds")
            )));
        }
        let dense: Vec<String> = serde_json::from_value(field("dense")).unwrap_or_default();
        if dense != DENSE_NAMES {
            return Err(bad(format!(
                "its dense features are not the {DENSE} of {VERSION}"
            )));
        }
        let platt: Vec<(f64, f64)> = serde_json::from_value(field("platt"))
            .map_err(|_| bad("`platt` is not a list of [a, b] pairs".into()))?;
        let platt: [(f64, f64); KINDS] = platt
            .try_into()
            .map_err(|_| bad(format!("`platt` needs {KINDS} pairs")))?;
        let calibration = match header.get("calibration") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(
                serde_json::from_value::<Calibration>(v.clone())
                    .map_err(|e| bad(format!("`calibration` is malformed: {e}")))?
                    .checked()
                    .map_err(bad)?,
            ),
        };
        let body = &bytes[12 + len..];
        if body.len() != DIM * 4 {
            return Err(bad(format!(
                "{} bytes of weights, not {} ({DIM} f32 values)",
                body.len(),
                DIM * 4
            )));
        }
        let weights: Vec<f32> = body
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if weights.iter().any(|w| !w.is_finite())
            || platt.iter().any(|(a, b)| !(a.is_finite() && b.is_finite()))
        {
            return Err(bad("it holds weights that are not finite".into()));
        }
        Ok(Self {
            weights,
            platt: platt.map(|(a, b)| (f64::from(a as f32), f64::from(b as f32))),
            calibration,
            header,
        })
    }

    /// A model from trained weights (rounded to f32, as stored), its Platt pairs
    /// and the metadata to write in its header.
    pub fn from_parts(
        weights: &[f64],
        platt: [(f64, f64); KINDS],
        meta: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, ModelError> {
        if weights.len() != DIM {
            return Err(ModelError(format!("{} weights, not {DIM}", weights.len())));
        }
        let mut header = meta;
        header.insert("version".into(), VERSION.into());
        header.insert("buckets".into(), BUCKETS.into());
        header.insert("kinds".into(), KINDS.into());
        header.insert("dense".into(), DENSE_NAMES.to_vec().into());
        let platt = platt.map(|(a, b)| (f64::from(a as f32), f64::from(b as f32)));
        header.insert(
            "platt".into(),
            platt
                .iter()
                .map(|&(a, b)| vec![a, b])
                .collect::<Vec<_>>()
                .into(),
        );
        Ok(Self {
            weights: weights.iter().map(|&w| w as f32).collect(),
            platt,
            calibration: None,
            header,
        })
    }

    /// The file's bytes (see [`NeedModel::parse`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = serde_json::to_vec(&self.header).unwrap_or_default();
        let mut out = Vec::with_capacity(12 + header.len() + 4 * DIM);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(
            &u32::try_from(header.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        out.extend_from_slice(&header);
        for w in &self.weights {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// The same model with a new threshold calibration.
    pub fn with_calibration(mut self, calibration: Calibration) -> Self {
        self.header.insert(
            "calibration".into(),
            serde_json::to_value(&calibration).unwrap_or_default(),
        );
        self.calibration = Some(calibration);
        self
    }

    /// How quality targets map to thresholds on `p`, if the model was calibrated.
    pub fn calibration(&self) -> Option<&Calibration> {
        self.calibration.as_ref()
    }

    /// The header's metadata (training data, row counts, penalties).
    pub fn header(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.header
    }

    /// Platt pair `(a, b)` of each kind.
    pub fn platt(&self) -> [(f64, f64); KINDS] {
        self.platt
    }

    fn weight(&self, index: usize) -> f64 {
        f64::from(self.weights.get(index).copied().unwrap_or(0.0))
    }

    fn dense_index(kind: usize, i: usize) -> usize {
        KINDS * BUCKETS + kind * DENSE + i
    }

    /// The estimate for a prompt.
    pub fn predict(&self, text: &str) -> NeedEstimate {
        SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut s) => self.score(text, &mut s, false).0,
            Err(_) => self.score(text, &mut Scratch::default(), false).0,
        })
    }

    /// The estimate and the `top` features that moved its logit most.
    pub fn explain(&self, text: &str, top: usize) -> (NeedEstimate, Vec<Contribution>) {
        let mut scratch = Scratch::default();
        let (estimate, mut all) = self.score(text, &mut scratch, true);
        all.sort_by(|a, b| {
            b.contribution
                .abs()
                .total_cmp(&a.contribution.abs())
                .then_with(|| a.feature.cmp(&b.feature))
        });
        all.truncate(top);
        (estimate, all)
    }

    fn score(
        &self,
        text: &str,
        scratch: &mut Scratch,
        explain: bool,
    ) -> (NeedEstimate, Vec<Contribution>) {
        let shape = features::featurize(text, scratch, explain);
        let kind = shape.kind;
        let mut z = 0.0;
        let mut parts = Vec::new();
        for h in &scratch.hashed {
            let w = self.weight(h.index as usize);
            z += w * h.value;
            if explain && w != 0.0 {
                let name = h.gram.map_or_else(String::new, |g| {
                    format!("{} {:?}", g.family.name(), g.text(&scratch.norm))
                });
                parts.push(Contribution {
                    feature: name,
                    value: h.value,
                    weight: w,
                    contribution: w * h.value,
                });
            }
        }
        for (i, &d) in shape.dense.iter().enumerate() {
            let w = self.weight(Self::dense_index(kind, i));
            z += w * d;
            if explain && d != 0.0 {
                parts.push(Contribution {
                    feature: DENSE_NAMES[i].to_owned(),
                    value: d,
                    weight: w,
                    contribution: w * d,
                });
            }
        }
        let (a, b) = self.platt[kind];
        let p = 1.0 / (1.0 + (-(a * z + b)).exp());
        (
            NeedEstimate {
                p,
                logit: z,
                kind: PromptKind::from_index(kind),
                task_bytes: shape.task_bytes,
                shots: shape.shots,
            },
            parts,
        )
    }
}

#[cfg(test)]
mod tests;

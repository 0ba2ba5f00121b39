//! Task analysis: from the request alone, estimate what kind of work a job is, how
//! hard it is, how many tokens it will read and write, and the quality it needs.
//!
//! The kind of work comes from a weighted lexicon plus a few structural signals
//! (code fences, arithmetic density, document length, multi-turn shape):
//! deterministic and explainable, every feature that fired is reported with its
//! weight. Instructions usually sit at the start or the end of a message, around
//! any pasted document, so features found near the edges count double; that keeps
//! a transcript that mentions "code" from turning a summary into a code job.
//!
//! The quality a job needs comes from the learned need estimate ([`need`]): the
//! probability that a cheap model falls short. The job's quality target picks a
//! threshold on it (calibrated on public judgments), and the catalog's scale
//! ([`NeedScale`]) turns "below" or "at or above" the threshold into a quality
//! for the job's category. The lexicon's complexity still sizes the answer.

mod lexicon;
mod scale;

use std::borrow::Cow;
use std::sync::Arc;

pub use switchyard_need as need;

use serde::Serialize;

use crate::catalog::Catalog;
use crate::job::{Job, ResponseFormat, Role};
pub use crate::vocab::TaskCategory;
use lexicon::{FEATURES, Lexicon};
use need::{Contribution, NeedModel, PromptKind};
pub use scale::{Anchors, NeedScale};

/// The share of the flagship's quality `auto` keeps when neither the pipeline
/// config nor the org policy says (`quality_target`).
pub const DEFAULT_QUALITY_TARGET: f64 = 0.92;

/// Features of the need estimate shown when explaining.
const TOP_NEED_FEATURES: usize = 5;

/// What analysis knows about each category: a plain job's complexity, typical
/// sizes and answer length.
trait CategoryTraits {
    fn base_complexity(self) -> f64;
    fn typical_bytes(self) -> f64;
    fn typical_max_tokens(self) -> f64;
    fn default_output_tokens(self) -> u32;
}

impl CategoryTraits for TaskCategory {
    /// Complexity of a plain job of this kind before any feature fires.
    fn base_complexity(self) -> f64 {
        match self {
            TaskCategory::Classification => 0.10,
            TaskCategory::Extraction => 0.14,
            TaskCategory::Summarization => 0.12,
            TaskCategory::Chat => 0.12,
            TaskCategory::Code => 0.18,
            TaskCategory::Reasoning => 0.20,
            TaskCategory::Math => 0.16,
            TaskCategory::Creative => 0.12,
        }
    }

    /// Length of a typical easy request of this kind, bytes.
    fn typical_bytes(self) -> f64 {
        match self {
            TaskCategory::Classification => 220.0,
            TaskCategory::Extraction => 300.0,
            TaskCategory::Summarization => 530.0,
            TaskCategory::Chat => 350.0,
            TaskCategory::Code => 170.0,
            TaskCategory::Reasoning => 250.0,
            TaskCategory::Math => 110.0,
            TaskCategory::Creative => 140.0,
        }
    }

    /// Answer cap of a typical easy request of this kind, tokens.
    fn typical_max_tokens(self) -> f64 {
        match self {
            TaskCategory::Classification => 12.0,
            TaskCategory::Extraction => 100.0,
            TaskCategory::Summarization => 110.0,
            TaskCategory::Chat => 150.0,
            TaskCategory::Code => 280.0,
            TaskCategory::Reasoning => 220.0,
            TaskCategory::Math => 80.0,
            TaskCategory::Creative => 100.0,
        }
    }

    /// Typical answer length when the job gives no `max_tokens`.
    fn default_output_tokens(self) -> u32 {
        match self {
            TaskCategory::Classification => 8,
            TaskCategory::Extraction => 250,
            TaskCategory::Summarization => 250,
            TaskCategory::Chat => 300,
            TaskCategory::Code => 700,
            TaskCategory::Reasoning => 800,
            TaskCategory::Math => 500,
            TaskCategory::Creative => 600,
        }
    }
}

/// One feature that fired, for explanations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FiredFeature {
    /// Feature name (the lexicon entry or structural signal).
    pub name: &'static str,
    /// Category it votes for, if any.
    pub category: Option<TaskCategory>,
    /// Vote weight after the edge bonus.
    pub weight: f32,
    /// Complexity it adds (negative: easier).
    pub complexity: f32,
}

/// How far below its anchor a job with no need at all sits: far less than the
/// catalog's quality steps (0.001), so no model's eligibility changes, while
/// jobs of one anchor are still ordered by their need, as a score should be.
pub const NEED_TIE_BREAK: f64 = 1e-4;

/// What the analysis concluded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskAnalysis {
    /// Most likely category.
    pub category: TaskCategory,
    /// A close second category, when the evidence is split; routing then asks
    /// for quality in both, so a misread job still lands on a capable model.
    pub alternative: Option<TaskCategory>,
    /// Vote per category, in [`TaskCategory::ALL`] order.
    pub scores: [f32; 8],
    /// 0 (trivial) ..= 1 (frontier-hard), from the lexicon: sizes the answer.
    pub complexity: f64,
    /// Quality the job needs for its category (and alternative): the catalog's
    /// bottom-third anchor when the need is below the threshold, its premium
    /// anchor at or above it, less [`NEED_TIE_BREAK`] × (1 − p), so that within
    /// an anchor the job that more likely needs a strong model needs more.
    pub required_quality: f64,
    /// The learned need and the threshold that decided.
    pub need: NeedAssessment,
    /// Estimated prompt tokens (about four bytes per token), for prices.
    pub prompt_tokens: u32,
    /// A cautious count for context-window checks: ASCII at four bytes per token,
    /// other text at two. Scripts such as Chinese, Japanese, Korean or Hindi take
    /// a token for every one to three bytes, so four bytes per token would
    /// undercount them; this figure decides when the exact count is needed.
    pub prompt_tokens_ceiling: u32,
    /// Expected answer length.
    pub expected_output_tokens: u32,
    /// Features that fired (filled only when asked, to keep the hot path allocation-free).
    pub features: Vec<FiredFeature>,
}

/// The learned need of one job and what it decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NeedAssessment {
    /// Probability that a cheap model falls short.
    pub p: f64,
    /// The model's logit before calibration.
    pub logit: f64,
    /// Which half of the model scored it.
    pub kind: PromptKind,
    /// Share of the flagship's quality to keep (the policy's, or the default).
    pub quality_target: f64,
    /// The threshold on `p` the target implies.
    pub threshold: f64,
    /// `p >= threshold`: only a top-third model qualifies.
    pub premium: bool,
    /// The features that moved the logit most (filled only when explaining).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top_features: Vec<Contribution>,
}

/// Structural signals gathered in one pass over the text.
#[derive(Default)]
struct Shape {
    bytes: usize,
    code_fences: usize,
    code_lines: usize,
    /// `name(a, b, c)` shapes: function calls, table schemas.
    call_shapes: usize,
    numbers: usize,
    operators: usize,
    questions: usize,
    list_items: usize,
    /// Runs of three or more ALL-CAPS words separated by commas, slashes or "or".
    caps_options: bool,
}

impl Shape {
    fn scan(text: &str) -> Self {
        let mut s = Shape {
            bytes: text.len(),
            ..Shape::default()
        };
        s.code_fences = memchr::memmem::find_iter(text.as_bytes(), b"```").count();
        for line in text.lines() {
            let t = line.trim();
            let Some(&last) = t.as_bytes().last() else {
                continue;
            };
            if matches!(last, b';' | b'{' | b'}') && t.len() > 3 {
                s.code_lines += 1;
            }
            let first = t.as_bytes()[0];
            if matches!(first, b'-' | b'*')
                || t.starts_with('•')
                || (first.is_ascii_digit() && matches!(t.as_bytes().get(1), Some(b'.' | b')')))
            {
                s.list_items += 1;
            }
        }
        // Character-level signals describe the request's form, which shows at its
        // edges: a long pasted document is sampled, not read whole.
        let b = text.as_bytes();
        let b = if b.len() > SHAPE_SAMPLE {
            &b[..SHAPE_SAMPLE]
        } else {
            b
        };
        let mut caps_run = 0usize;
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if c.is_ascii_lowercase() {
                // By far the most common byte: nothing to count.
                caps_run = 0;
                i += 1;
                continue;
            }
            if c.is_ascii_digit() {
                s.numbers += 1;
                while i < b.len() && (b[i].is_ascii_digit() || matches!(b[i], b'.' | b',')) {
                    i += 1;
                }
                continue;
            }
            if c.is_ascii_uppercase() {
                let start = i;
                while i < b.len() && (b[i].is_ascii_uppercase() || b[i] == b'_') {
                    i += 1;
                }
                let word_end = i >= b.len() || !b[i].is_ascii_alphanumeric();
                if i - start >= 2
                    && word_end
                    && (start == 0 || !b[start - 1].is_ascii_alphanumeric())
                {
                    caps_run += 1;
                    if caps_run >= 3 {
                        s.caps_options = true;
                    }
                } else if i - start != 1 || word_end {
                    caps_run = 0;
                }
                continue;
            }
            match c {
                b'+' | b'*' | b'/' | b'^' | b'=' => {
                    let near =
                        |j: usize| b.get(j).is_some_and(|x| x.is_ascii_digit() || *x == b' ');
                    if i > 0 && near(i - 1) && near(i + 1) {
                        s.operators += 1;
                    }
                }
                b'?' => s.questions += 1,
                b'(' => {
                    let ident_before =
                        i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
                    let close = b[i..].iter().take(120).position(|x| *x == b')');
                    if ident_before && close.is_some_and(|n| b[i..i + n].contains(&b',')) {
                        s.call_shapes += 1;
                    }
                }
                b',' | b' ' | b'|' => {}
                b'o' if b.get(i + 1) == Some(&b'r') && b.get(i + 2) == Some(&b' ') => {}
                _ if c.is_ascii_alphabetic() => caps_run = 0,
                _ => {}
            }
            i += 1;
        }
        s
    }
}

/// Byte ranges of `text` that are data rather than instructions: long quoted
/// passages, and the middle of a long message (instructions sit at the edges).
fn data_regions(text: &str) -> Vec<(usize, usize)> {
    const MIN_QUOTE: usize = 60;
    // Opening and closing marks: "…", “…”, „…“, «…».
    const PAIRS: [(&[u8], &[u8]); 4] = [
        (b"\"", b"\""),
        ("“".as_bytes(), "”".as_bytes()),
        ("„".as_bytes(), "“".as_bytes()),
        ("«".as_bytes(), "»".as_bytes()),
    ];
    let b = text.as_bytes();
    let mut regions = Vec::new();
    let mut open: Option<(usize, &[u8])> = None;
    let mut i = 0;
    // Quote marks start with '"', 0xE2 (“ ” „) or 0xC2 (« »): only those bytes are examined.
    while let Some(step) = memchr::memchr3(b'"', 0xE2, 0xC2, &b[i..]) {
        let at = i + step;
        let rest = &b[at..];
        match open {
            Some((start, close)) if rest.starts_with(close) => {
                if at - start >= MIN_QUOTE {
                    regions.push((start, at));
                }
                open = None;
                i = at + close.len();
            }
            Some(_) => i = at + 1,
            None => match PAIRS.iter().find(|(o, _)| rest.starts_with(o)) {
                Some((o, c)) => {
                    open = Some((at + o.len(), c));
                    i = at + o.len();
                }
                None => i = at + 1,
            },
        }
    }
    if text.len() > 3 * EDGE {
        regions.push((EDGE, text.len() - EDGE / 2));
    }
    regions
}

/// The analyzer: a compiled lexicon, the need model and the catalog's scale.
/// Build once, share everywhere.
pub struct TaskAnalyzer {
    lexicon: Lexicon,
    model: Arc<NeedModel>,
    scale: NeedScale,
    default_target: f64,
}

/// Bytes at the start of a long message that count as "the instruction".
const EDGE: usize = 320;
/// Bytes of a message examined for character-level signals.
const SHAPE_SAMPLE: usize = 3_000;

/// Words of the fired-features bitset.
const FEATURE_WORDS: usize = 16;

/// Weight of a feature found in data rather than in the instruction.
const DATA_WEIGHT: f32 = 0.3;
/// A runner-up scoring at least this share of the winner is a plausible reading too.
const ALTERNATIVE_SHARE: f32 = 0.7;

impl TaskAnalyzer {
    /// An analyzer for `catalog`'s quality scale with a need model and the
    /// quality target of jobs whose policy sets none.
    pub fn new(catalog: &Catalog, model: Arc<NeedModel>, default_target: f64) -> Self {
        Self {
            lexicon: Lexicon::build(),
            model,
            scale: NeedScale::new(catalog),
            default_target,
        }
    }

    /// The analyzer a pipeline config describes: its catalog, need model and
    /// default quality target.
    pub fn for_pipeline(pipeline: &crate::config::LoadedPipeline) -> Self {
        Self::new(
            &pipeline.catalog,
            pipeline.need_model.clone(),
            pipeline.config.routing.default_quality_target,
        )
    }

    /// The need model.
    pub fn model(&self) -> &NeedModel {
        &self.model
    }

    /// The threshold on the need that a quality target implies (`None`: the default target).
    pub fn threshold(&self, target: Option<f64>) -> f64 {
        let target = target.unwrap_or(self.default_target);
        self.model
            .calibration()
            .map_or(UNCALIBRATED_THRESHOLD, |c| c.threshold(target))
    }

    /// Analyses a job under the default quality target. With `explain`, the
    /// fired features and the need's top features are listed.
    pub fn analyze(&self, job: &Job, explain: bool) -> TaskAnalysis {
        self.analyze_for(job, None, explain)
    }

    /// Analyses a job under a quality target (`None`: the default), as its policy sets it.
    pub fn analyze_for(&self, job: &Job, target: Option<f64>, explain: bool) -> TaskAnalysis {
        let mut votes = Votes::new(explain);
        // The instruction is the last user turn; the system prompt sets the job's role.
        let instruction = job
            .request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map_or("", |m| m.content.as_str());
        if let Some(system) = job.system_prompt() {
            votes.scan(&self.lexicon, system, 0.8, &[]);
        }
        votes.scan(&self.lexicon, instruction, 1.0, &data_regions(instruction));
        let shape = Shape::scan(instruction);
        for (name, cat, w, cx) in structural_signals(job, &shape) {
            votes.fire(name, cat, w, cx);
        }
        let (category, top) = votes.category(&shape);
        let alternative = votes.alternative(category, top);

        let texts = || {
            job.request
                .messages
                .iter()
                .map(|m| m.content.as_str())
                .chain(job.request.system.as_deref())
        };
        let total_bytes: usize = texts().map(str::len).sum();
        let non_ascii_bytes: usize = texts().map(non_ascii_bytes).sum();
        let prompt_tokens = estimate_tokens(total_bytes);
        let max_tokens = job.request.max_tokens;
        let complexity = complexity(category, votes.cx_sum, total_bytes, max_tokens);
        let need = self.need(job, target, explain);
        let anchors = self.scale.anchors(category, alternative);
        TaskAnalysis {
            category,
            alternative,
            scores: votes.scores,
            complexity,
            required_quality: if need.premium {
                anchors.premium
            } else {
                anchors.cheap
            } - NEED_TIE_BREAK * (1.0 - need.p.clamp(0.0, 1.0)),
            need,
            prompt_tokens,
            prompt_tokens_ceiling: ceiling_tokens(total_bytes, non_ascii_bytes),
            expected_output_tokens: expected_output(
                category,
                complexity,
                max_tokens,
                prompt_tokens,
            ),
            features: votes.features,
        }
    }
}

impl TaskAnalyzer {
    fn need(&self, job: &Job, target: Option<f64>, explain: bool) -> NeedAssessment {
        let text = job_text(job);
        let (estimate, top_features) = if explain {
            self.model.explain(&text, TOP_NEED_FEATURES)
        } else {
            (self.model.predict(&text), Vec::new())
        };
        let threshold = self.threshold(target);
        NeedAssessment {
            p: estimate.p,
            logit: estimate.logit,
            kind: estimate.kind,
            quality_target: target.unwrap_or(self.default_target),
            threshold,
            premium: estimate.p >= threshold,
            top_features,
        }
    }
}

/// The threshold of a model without a calibration (the loader refuses such
/// models; this serves models built in code).
const UNCALIBRATED_THRESHOLD: f64 = 0.5;

/// The text a job is scored on: its system prompt, then its messages in order,
/// joined by a blank line (a job with one user message is just that message).
pub fn job_text(job: &Job) -> Cow<'_, str> {
    let system = job.request.system.as_deref();
    let mut parts = system
        .into_iter()
        .chain(job.request.messages.iter().map(|m| m.content.as_str()));
    let first = parts.next().unwrap_or("");
    let Some(second) = parts.next() else {
        return Cow::Borrowed(first);
    };
    let mut s = String::with_capacity(first.len() + second.len() + 2);
    s.push_str(first);
    for p in std::iter::once(second).chain(parts) {
        s.push_str("\n\n");
        s.push_str(p);
    }
    Cow::Owned(s)
}

/// The evidence gathered for one job: votes per category, complexity added by
/// the features that fired, and (when explaining) the features themselves.
struct Votes {
    scores: [f32; 8],
    cx_sum: f32,
    features: Vec<FiredFeature>,
    explain: bool,
    /// One bit per lexicon entry: an allocation-free "already fired" set.
    seen: [u64; FEATURE_WORDS],
}

impl Votes {
    fn new(explain: bool) -> Self {
        Self {
            scores: [0.0; 8],
            cx_sum: 0.0,
            features: Vec::new(),
            explain,
            seen: [0; FEATURE_WORDS],
        }
    }

    fn fire(&mut self, name: &'static str, cat: Option<TaskCategory>, w: f32, cx: f32) {
        if let Some(c) = cat {
            self.scores[c.index()] += w;
        }
        self.cx_sum += cx;
        if self.explain {
            self.features.push(FiredFeature {
                name,
                category: cat,
                weight: w,
                complexity: cx,
            });
        }
    }

    /// Votes of the lexicon entries found in `text`, scaled by `scale`; those
    /// inside `regions` (data, not instruction) count less.
    fn scan(&mut self, lexicon: &Lexicon, text: &str, scale: f32, regions: &[(usize, usize)]) {
        for m in lexicon.find_iter(text) {
            let f = &FEATURES[m.feature];
            let in_data = regions.iter().any(|(a, b)| m.start >= *a && m.end <= *b);
            let w = f.weight * scale * if in_data { DATA_WEIGHT } else { 1.0 };
            let (word, bit) = (m.feature / 64, 1u64 << (m.feature % 64));
            if self.seen[word] & bit == 0 {
                self.seen[word] |= bit;
                let cx = f.complexity * if in_data { 0.5 } else { 1.0 };
                self.fire(f.name, f.category, w, cx);
            } else if let Some(c) = f.category {
                // Repeats add a little, so one stray word cannot outvote a theme.
                self.scores[c.index()] += w * 0.25;
            }
        }
    }

    /// The winning category and its score; a fallback when nothing is decisive.
    fn category(&mut self, shape: &Shape) -> (TaskCategory, f32) {
        let (category, top) = TaskCategory::ALL
            .into_iter()
            .map(|c| (c, self.scores[c.index()]))
            .fold((TaskCategory::Chat, 0.0f32), |best, cur| {
                if cur.1 > best.1 { cur } else { best }
            });
        if top > 0.5 {
            return (category, top);
        }
        // Nothing decisive: a long request with a question is usually analysis; else conversation.
        let category = if shape.bytes > 400 && shape.questions >= 1 {
            TaskCategory::Reasoning
        } else {
            TaskCategory::Chat
        };
        self.fire("fallback", Some(category), 0.0, 0.0);
        (category, top)
    }

    /// A close second category, when the evidence is split.
    fn alternative(&self, category: TaskCategory, top: f32) -> Option<TaskCategory> {
        TaskCategory::ALL
            .into_iter()
            .filter(|c| *c != category)
            .map(|c| (c, self.scores[c.index()]))
            .fold(None, |best: Option<(TaskCategory, f32)>, cur| {
                if best.is_none_or(|b| cur.1 > b.1) {
                    Some(cur)
                } else {
                    best
                }
            })
            .filter(|(_, score)| *score > 0.5 && *score >= ALTERNATIVE_SHARE * top.max(0.5))
            .map(|(c, _)| c)
    }
}

/// A structural signal: name, category it votes for, weight, complexity added.
type Signal = (&'static str, Option<TaskCategory>, f32, f32);

/// Signals from the request's shape rather than its words: code blocks,
/// call-like shapes, arithmetic, long documents, label options, answer caps,
/// conversation turns, JSON mode, short questions, constraint lists.
fn structural_signals(job: &Job, shape: &Shape) -> Vec<Signal> {
    let mut out: Vec<Signal> = Vec::new();
    if shape.code_fences >= 2 || shape.code_lines >= 3 {
        let w = 1.6 + 0.1 * shape.code_lines.min(10) as f32;
        out.push(("code-block", Some(TaskCategory::Code), w, 0.0));
    }
    if shape.call_shapes >= 1 {
        let w = 0.8 + 0.4 * shape.call_shapes.min(4) as f32;
        out.push(("call-or-schema-shape", Some(TaskCategory::Code), w, 0.0));
    }
    if shape.operators >= 2 || (shape.bytes < 300 && shape.numbers >= 2 && shape.questions >= 1) {
        let w = 1.2 + 0.2 * shape.operators.min(5) as f32;
        out.push(("numbers-and-a-question", Some(TaskCategory::Math), w, 0.0));
    }
    if shape.bytes > 1_200 && shape.code_fences == 0 && shape.code_lines < 3 {
        // A long pasted document: summarising or extracting from it are the usual asks.
        out.push(("long-document", Some(TaskCategory::Summarization), 0.8, 0.0));
        out.push((
            "long-document-fields",
            Some(TaskCategory::Extraction),
            0.3,
            0.0,
        ));
    }
    if shape.caps_options {
        out.push((
            "label-options",
            Some(TaskCategory::Classification),
            1.5,
            0.0,
        ));
    }
    match job.request.max_tokens {
        Some(m) if m <= 24 => {
            out.push(("tiny-answer", Some(TaskCategory::Classification), 1.5, 0.0))
        }
        Some(m) if m <= 64 => {
            out.push(("short-answer", Some(TaskCategory::Classification), 0.5, 0.0))
        }
        _ => {}
    }
    let messages = &job.request.messages;
    let user_turns = messages.iter().filter(|m| m.role == Role::User).count();
    if user_turns >= 2 && messages.iter().any(|m| m.role == Role::Assistant) {
        out.push(("multi-turn", Some(TaskCategory::Chat), 1.4, 0.0));
    }
    if job.request.response_format == ResponseFormat::JsonObject {
        out.push(("json-mode", Some(TaskCategory::Extraction), 1.0, 0.0));
    }
    if shape.bytes < 200 && shape.questions >= 1 {
        out.push(("short-question", Some(TaskCategory::Chat), 0.4, 0.0));
    }
    if shape.list_items >= 3 {
        let cx = 0.02 * shape.list_items.min(10) as f32;
        out.push(("constraint-list", Some(TaskCategory::Reasoning), 0.4, cx));
    }
    out
}

/// Complexity: the category's base, what the features added, and how far the
/// request's length and answer cap are from the category's habit (log scale,
/// bounded).
fn complexity(
    category: TaskCategory,
    cx_sum: f32,
    total_bytes: usize,
    max_tokens: Option<u32>,
) -> f64 {
    let mut complexity = category.base_complexity() + f64::from(cx_sum);
    // Longer than usual for the kind of job: harder.
    let length_ratio = (total_bytes.max(1) as f64 / category.typical_bytes()).log2();
    complexity += (0.15 * length_ratio).clamp(-0.08, 0.40);
    // A large answer cap says the caller expects a long, involved answer.
    complexity += match max_tokens {
        Some(m) => {
            (0.11 * (f64::from(m.max(1)) / category.typical_max_tokens()).log2()).clamp(-0.08, 0.36)
        }
        None => 0.04,
    };
    complexity.clamp(0.0, 1.0)
}

/// About four bytes of English per token; a conservative estimate for routing.
pub fn estimate_tokens(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(4) + 4).unwrap_or(u32::MAX)
}

/// ASCII at four bytes per token, everything else at two: more tokens than
/// `cl100k_base` and `o200k_base` give for Chinese, Japanese, Korean, Hindi,
/// Thai, Arabic or Russian text (2.4 to 4.5 bytes per token outside ASCII in our
/// measurements), and equal to [`estimate_tokens`] for ASCII. Emoji-dense text
/// (about 1.6 bytes per token) can still exceed it.
pub fn ceiling_tokens(bytes: usize, non_ascii_bytes: usize) -> u32 {
    let ascii = bytes.saturating_sub(non_ascii_bytes);
    u32::try_from(ascii.div_ceil(4) + non_ascii_bytes.div_ceil(2) + 4).unwrap_or(u32::MAX)
}

/// Bytes of `text` outside ASCII (UTF-8 lead and continuation bytes).
fn non_ascii_bytes(text: &str) -> usize {
    text.bytes().filter(|b| !b.is_ascii()).count()
}

/// Expected answer length: the category's habit, scaled by complexity, never over `max_tokens`.
fn expected_output(
    category: TaskCategory,
    complexity: f64,
    max_tokens: Option<u32>,
    prompt_tokens: u32,
) -> u32 {
    let typical = f64::from(category.default_output_tokens()) * (0.6 + complexity);
    let typical = match category {
        // Summaries and extractions scale with what they read.
        TaskCategory::Summarization => typical.max(f64::from(prompt_tokens) * 0.15),
        TaskCategory::Extraction => typical.max(f64::from(prompt_tokens) * 0.10),
        _ => typical,
    };
    let typical = typical.round().max(1.0) as u32;
    match max_tokens {
        // Answers rarely use the whole cap; but they never exceed it.
        Some(max) => typical.min(max).max((max / 8).min(typical)),
        None => typical,
    }
}

#[cfg(test)]
pub(crate) mod tests;

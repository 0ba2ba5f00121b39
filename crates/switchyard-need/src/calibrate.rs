//! From a quality target to a threshold on the need, the way RouteLLM calibrates
//! its routers: on a labelled set where each prompt says whether the weak and
//! the strong model answered it well, routing every prompt with `p >= t` to the
//! strong model keeps some share of the strong model's quality. A target (say
//! 0.95 of the strong model's quality) picks the highest threshold that keeps
//! it, so the fewest prompts go to the strong model. Also the measures that
//! judge a need estimate: AUC and the cost/quality curve.

use serde::{Deserialize, Serialize};

/// A threshold above every probability: nothing is sent to the strong model.
pub const NEVER: f64 = 1.01;

/// One labelled prompt for calibration: its need and how each model did (1 or 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judged {
    /// The estimate's probability.
    pub p: f64,
    /// The weak model answered well.
    pub weak: f64,
    /// The strong model answered well.
    pub strong: f64,
}

/// A point of the cost/quality curve: route `p >= threshold` to the strong model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CurvePoint {
    /// The threshold.
    pub threshold: f64,
    /// Share of prompts sent to the strong model.
    pub strong_share: f64,
    /// Mean quality of the routed answers.
    pub quality: f64,
}

/// Thresholds per quality target, as computed on a labelled set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// What the thresholds were computed on.
    pub set: String,
    /// Prompts in it.
    pub rows: usize,
    /// Mean quality of the strong model alone, and of the weak model alone.
    pub strong_quality: f64,
    /// See `strong_quality`.
    pub weak_quality: f64,
    /// `[target, threshold]`, targets ascending, thresholds not increasing.
    pub points: Vec<[f64; 2]>,
}

/// Targets the shipped calibration lists: 0.50, 0.51, …, 1.00.
pub fn target_grid() -> impl Iterator<Item = f64> {
    (50..=100).map(|i| f64::from(i) / 100.0)
}

impl Calibration {
    /// Computes the thresholds of `targets` on a labelled set.
    pub fn compute(set: &str, rows: &[Judged], targets: impl Iterator<Item = f64>) -> Self {
        let curve = curve(rows);
        let n = rows.len().max(1) as f64;
        let strong_quality = rows.iter().map(|r| r.strong).sum::<f64>() / n;
        let weak_quality = rows.iter().map(|r| r.weak).sum::<f64>() / n;
        let points = targets
            .map(|t| [t, threshold_on(&curve, t * strong_quality)])
            .collect();
        Self {
            set: set.to_owned(),
            rows: rows.len(),
            strong_quality,
            weak_quality,
            points,
        }
    }

    /// Checks the invariants a loaded calibration must hold.
    pub fn checked(self) -> Result<Self, String> {
        if self.points.is_empty() {
            return Err("`calibration.points` is empty".into());
        }
        for w in self.points.windows(2) {
            if !(w[0][0] < w[1][0] && w[1][1] <= w[0][1]) {
                return Err(
                    "`calibration.points` must have rising targets and thresholds that do not rise"
                        .into(),
                );
            }
        }
        if self
            .points
            .iter()
            .any(|[t, th]| !(0.0..=1.0).contains(t) || !th.is_finite())
        {
            return Err("`calibration.points` holds a target outside 0..1".into());
        }
        Ok(self)
    }

    /// The threshold for `target`: that of the smallest listed target at or
    /// above it (so a target between two points is never under-served).
    pub fn threshold(&self, target: f64) -> f64 {
        self.points
            .iter()
            .find(|[t, _]| *t + 1e-9 >= target)
            .or(self.points.last())
            .map_or(0.0, |[_, th]| *th)
    }
}

/// The cost/quality curve: one point per distinct probability (sending every
/// prompt at or above it to the strong model), plus "none", by threshold descending.
pub fn curve(rows: &[Judged]) -> Vec<CurvePoint> {
    let mut sorted: Vec<&Judged> = rows.iter().collect();
    sorted.sort_by(|a, b| b.p.total_cmp(&a.p));
    let n = rows.len().max(1) as f64;
    let mut quality: f64 = rows.iter().map(|r| r.weak).sum();
    let mut out = vec![CurvePoint {
        threshold: NEVER,
        strong_share: 0.0,
        quality: quality / n,
    }];
    let mut i = 0;
    while i < sorted.len() {
        let p = sorted[i].p;
        while i < sorted.len() && sorted[i].p == p {
            quality += sorted[i].strong - sorted[i].weak;
            i += 1;
        }
        out.push(CurvePoint {
            threshold: p,
            strong_share: i as f64 / n,
            quality: quality / n,
        });
    }
    out
}

/// The highest threshold of `curve` whose quality reaches `needed`.
fn threshold_on(curve: &[CurvePoint], needed: f64) -> f64 {
    curve
        .iter()
        .find(|c| c.quality >= needed - 1e-12)
        .or(curve.last())
        .map_or(0.0, |c| c.threshold)
}

/// Mann–Whitney AUC of `scores` against 0/1 `labels` (ties get average ranks);
/// `None` without both labels.
pub fn auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut ranks = vec![0.0; scores.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = rank;
        }
        i = j + 1;
    }
    let n1 = labels.iter().filter(|&&l| l).count() as f64;
    let n0 = labels.len() as f64 - n1;
    if n1 == 0.0 || n0 == 0.0 {
        return None;
    }
    let sum: f64 = ranks
        .iter()
        .zip(labels)
        .filter(|(_, l)| **l)
        .map(|(r, _)| r)
        .sum();
    Some((sum - n1 * (n1 + 1.0) / 2.0) / (n1 * n0))
}

/// The rows a model's thresholds are calibrated on: those with measured
/// judgments of both models (rows neither model answered included, as
/// RouteLLM counts them), or, when a file has none, every labelled row with the
/// judgments its label implies. Returns the set's description and the rows.
pub fn calibration_rows<'a>(
    rows: &[&'a crate::train::Row],
) -> (String, Vec<&'a crate::train::Row>) {
    let measured: Vec<&crate::train::Row> = rows
        .iter()
        .copied()
        .filter(|r| r.weak_correct.is_some() && r.strong_correct.is_some())
        .collect();
    if !measured.is_empty() {
        let mut sources: Vec<&str> = measured.iter().map(|r| r.source.as_str()).collect();
        sources.sort_unstable();
        sources.dedup();
        return (
            format!("{} (measured judgments)", sources.join(" + ")),
            measured,
        );
    }
    let labelled: Vec<&crate::train::Row> = rows
        .iter()
        .copied()
        .filter(|r| r.required_tier.is_some())
        .collect();
    let mut sources: Vec<&str> = labelled.iter().map(|r| r.source.as_str()).collect();
    sources.sort_unstable();
    sources.dedup();
    (
        format!("{} (judgments implied by the labels)", sources.join(" + ")),
        labelled,
    )
}

/// Calibrates `model`'s thresholds on `rows` (see [`calibration_rows`]) for
/// the targets of [`target_grid`].
pub fn calibrate(model: &crate::NeedModel, rows: &[&crate::train::Row], what: &str) -> Calibration {
    let (set, chosen) = calibration_rows(rows);
    let judged: Vec<Judged> = chosen
        .iter()
        .map(|r| {
            let (weak, strong) = r.correctness();
            Judged {
                p: model.predict(&r.prompt).p,
                weak: f64::from(u8::from(weak)),
                strong: f64::from(u8::from(strong)),
            }
        })
        .collect();
    Calibration::compute(&format!("{what}{set}"), &judged, target_grid())
}

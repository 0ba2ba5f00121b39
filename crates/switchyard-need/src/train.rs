//! Training the need model (`docs/need-model.md` §6): labelled rows in the
//! routing-data format, the dev/train split, row weights per group, an
//! L2-regularised logistic regression solved by truncated Newton, and
//! cross-fitted Platt calibration per kind. Deterministic: the objective is
//! strictly convex, the solver has no randomness, and the folds and splits are
//! hashes of row ids.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::features::{self, BUCKETS, DENSE, DIM, KINDS, Scratch, fnv1a};
use crate::{ModelError, NeedModel};

/// Penalty on hashed weights, per kind (open, multiple choice).
pub const LAMBDA_HASH: [f64; KINDS] = [3e-4, 1e-2];
/// Penalty on dense weights; the two intercepts are not penalised.
pub const LAMBDA_DENSE: f64 = 1e-3;
/// Folds of the cross-fitted calibration.
const FOLDS: u64 = 5;
const NEWTON_MAXIT: usize = 50;
const NEWTON_GTOL: f64 = 1e-10;
const CG_MAXIT: usize = 500;

/// Weight of a row per group: GSM8K counts thrice (its few rows carry the
/// arithmetic signal), the written cheap prompts twice (they stand for the
/// open-ended traffic the shared file lacks).
pub const ROW_WEIGHT: &[(&str, f64)] = &[
    ("gsm8k", 3.0),
    ("mmlu", 1.0),
    ("arena-hard-v0.1", 1.0),
    ("written-cheap", 2.0),
    ("written-premium", 1.0),
    ("demo", 1.0),
];

/// The tier a row says a job needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequiredTier {
    /// A cheap model answers it well.
    Cheap,
    /// Only a premium model does.
    Premium,
}

/// One labelled prompt, as in `pipelines/routing-data/*.jsonl`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Row {
    /// Stable id.
    pub id: String,
    /// Where it comes from (`gsm8k`, `mmlu`, `arena-hard-v0.1`, `switchyard-written`, …).
    pub source: String,
    /// Topic (MMLU subject, …).
    #[serde(default)]
    pub subject: String,
    /// The project's category, where known.
    #[serde(default)]
    pub category: Option<String>,
    /// The prompt.
    pub prompt: String,
    /// Whether the strong model answered well (measured), if known.
    #[serde(default)]
    pub strong_correct: Option<bool>,
    /// Whether the weak model answered well (measured), if known.
    #[serde(default)]
    pub weak_correct: Option<bool>,
    /// `cheap`, `premium`, or null when neither model answered well.
    pub required_tier: Option<RequiredTier>,
}

/// The split a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Split {
    /// Trained on.
    Train,
    /// Held out for figures and calibration.
    Dev,
}

impl Row {
    /// Parses JSON lines; `origin` names the file in errors.
    pub fn parse_jsonl(origin: &str, text: &str) -> Result<Vec<Row>, String> {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| {
                    format!(
                        "{origin}:{}: not a routing-data row ({e}); each line needs id, source, prompt and required_tier (\"cheap\", \"premium\" or null)",
                        i + 1
                    )
                })
            })
            .collect()
    }

    /// 1 when the row needs premium, 0 when cheap is enough, `None` when neither model was right.
    pub fn label(&self) -> Option<bool> {
        self.required_tier.map(|t| t == RequiredTier::Premium)
    }

    /// Dev or train: a hash of the MMLU subject (whole subjects are held out),
    /// else of the id.
    pub fn split(&self) -> Split {
        let key = if self.source == "mmlu" {
            format!("switchyard-dev:{}", self.subject)
        } else {
            format!("switchyard-dev:{}", self.id)
        };
        if fnv1a(key.as_bytes()).is_multiple_of(4) {
            Split::Dev
        } else {
            Split::Train
        }
    }

    fn fold(&self) -> u64 {
        fnv1a(format!("switchyard-fold:{}", self.id).as_bytes()) % FOLDS
    }

    /// The group its weight comes from.
    pub fn group(&self) -> String {
        match self.source.as_str() {
            "switchyard-written" => match self.required_tier {
                Some(RequiredTier::Premium) => "written-premium".into(),
                _ => "written-cheap".into(),
            },
            "switchyard-demo" => "demo".into(),
            s => s.to_owned(),
        }
    }

    /// Its weight in training (1 for a group not listed).
    pub fn weight(&self) -> f64 {
        let g = self.group();
        ROW_WEIGHT
            .iter()
            .find(|(name, _)| *name == g)
            .map_or(1.0, |(_, w)| *w)
    }

    /// Whether the weak and the strong model answered well: measured where the
    /// row says, else implied by its label (cheap: both; premium: only the
    /// strong one; neither: none).
    pub fn correctness(&self) -> (bool, bool) {
        match (self.weak_correct, self.strong_correct) {
            (Some(w), Some(s)) => (w, s),
            _ => match self.required_tier {
                Some(RequiredTier::Cheap) => (true, true),
                Some(RequiredTier::Premium) => (false, true),
                None => (false, false),
            },
        }
    }
}

/// Sparse design matrix over the columns used by its rows (rows in CSR form).
struct Design {
    row_ptr: Vec<usize>,
    cols: Vec<u32>,
    vals: Vec<f64>,
    /// Global weight index of each local column.
    global: Vec<u32>,
}

impl Design {
    fn build(rows: &[&Row]) -> (Self, Vec<usize>) {
        let mut scratch = Scratch::default();
        let mut entries: Vec<Vec<(u32, f64)>> = Vec::with_capacity(rows.len());
        let mut kinds = Vec::with_capacity(rows.len());
        for r in rows {
            let shape = features::featurize(&r.prompt, &mut scratch, false);
            let mut e: Vec<(u32, f64)> =
                scratch.hashed.iter().map(|h| (h.index, h.value)).collect();
            let base = (KINDS * BUCKETS + shape.kind * DENSE) as u32;
            for (i, &v) in shape.dense.iter().enumerate() {
                if v != 0.0 {
                    e.push((base + i as u32, v));
                }
            }
            e.sort_by_key(|&(j, _)| j);
            // Families hitting the same index add up.
            let mut merged: Vec<(u32, f64)> = Vec::with_capacity(e.len());
            for (j, v) in e {
                match merged.last_mut() {
                    Some(last) if last.0 == j => last.1 += v,
                    _ => merged.push((j, v)),
                }
            }
            entries.push(merged);
            kinds.push(shape.kind);
        }
        let mut used: Vec<u32> = entries.iter().flatten().map(|&(j, _)| j).collect();
        // Every intercept is a column even if no row of its kind exists.
        for k in 0..KINDS {
            used.push((KINDS * BUCKETS + k * DENSE + DENSE - 1) as u32);
        }
        used.sort_unstable();
        used.dedup();
        let mut local = std::collections::HashMap::with_capacity(used.len());
        for (i, &g) in used.iter().enumerate() {
            local.insert(g, i as u32);
        }
        let mut d = Design {
            row_ptr: vec![0],
            cols: Vec::new(),
            vals: Vec::new(),
            global: used,
        };
        for e in entries {
            for (j, v) in e {
                d.cols.push(local[&j]);
                d.vals.push(v);
            }
            d.row_ptr.push(d.cols.len());
        }
        (d, kinds)
    }

    fn row(&self, i: usize) -> (&[u32], &[f64]) {
        let (a, b) = (self.row_ptr[i], self.row_ptr[i + 1]);
        (&self.cols[a..b], &self.vals[a..b])
    }

    /// `X w` over the rows in `idx`.
    fn dot(&self, idx: &[usize], w: &[f64], out: &mut [f64]) {
        for (k, &i) in idx.iter().enumerate() {
            let (c, v) = self.row(i);
            out[k] = c.iter().zip(v).map(|(&j, &x)| x * w[j as usize]).sum();
        }
    }

    /// `Xᵀ u` over the rows in `idx`.
    fn tdot(&self, idx: &[usize], u: &[f64], out: &mut [f64]) {
        out.iter_mut().for_each(|o| *o = 0.0);
        for (k, &i) in idx.iter().enumerate() {
            let (c, v) = self.row(i);
            let uk = u[k];
            for (&j, &x) in c.iter().zip(v) {
                out[j as usize] += x * uk;
            }
        }
    }

    fn penalties(&self) -> Vec<f64> {
        self.global
            .iter()
            .map(|&g| {
                let g = g as usize;
                if g < KINDS * BUCKETS {
                    LAMBDA_HASH[g / BUCKETS]
                } else if (g - KINDS * BUCKETS) % DENSE == DENSE - 1 {
                    0.0
                } else {
                    LAMBDA_DENSE
                }
            })
            .collect()
    }
}

fn sigmoid(z: f64) -> f64 {
    0.5 * (1.0 + (0.5 * z).tanh())
}

fn log1pexp(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

fn dotv(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The weighted logistic problem on a subset of rows.
struct Problem<'a> {
    x: &'a Design,
    idx: Vec<usize>,
    y: Vec<f64>,
    w: Vec<f64>,
    lam: &'a [f64],
}

impl Problem<'_> {
    fn objective(&self, coef: &[f64], z: &mut [f64], grad: &mut [f64]) -> f64 {
        self.x.dot(&self.idx, coef, z);
        let mut loss = 0.0;
        let mut u = vec![0.0; z.len()];
        for k in 0..z.len() {
            loss += self.w[k] * (log1pexp(z[k]) - self.y[k] * z[k]);
            u[k] = self.w[k] * (sigmoid(z[k]) - self.y[k]);
        }
        loss += 0.5
            * self
                .lam
                .iter()
                .zip(coef)
                .map(|(l, c)| l * c * c)
                .sum::<f64>();
        self.x.tdot(&self.idx, &u, grad);
        for j in 0..grad.len() {
            grad[j] += self.lam[j] * coef[j];
        }
        loss
    }

    /// Truncated Newton with Jacobi-preconditioned conjugate gradients and
    /// Armijo backtracking (§6.3).
    fn solve(&self) -> Vec<f64> {
        let dim = self.lam.len();
        let n = self.idx.len();
        let mut coef = vec![0.0; dim];
        let mut z = vec![0.0; n];
        let mut g = vec![0.0; dim];
        let mut f = self.objective(&coef, &mut z, &mut g);
        let (mut xq, mut aq, mut hv) = (vec![0.0; n], vec![0.0; dim], vec![0.0; n]);
        for _ in 0..NEWTON_MAXIT {
            if g.iter().all(|v| v.abs() <= NEWTON_GTOL) {
                break;
            }
            self.x.dot(&self.idx, &coef, &mut z);
            let h: Vec<f64> = (0..n)
                .map(|k| {
                    let p = sigmoid(z[k]);
                    self.w[k] * p * (1.0 - p)
                })
                .collect();
            let mut diag = vec![0.0; dim];
            for (k, &i) in self.idx.iter().enumerate() {
                let (c, v) = self.x.row(i);
                for (&j, &x) in c.iter().zip(v) {
                    diag[j as usize] += h[k] * x * x;
                }
            }
            let m: Vec<f64> = diag
                .iter()
                .zip(self.lam)
                .map(|(d, &l)| 1.0 / (d + if l > 0.0 { l } else { 1e-12 }))
                .collect();
            let gnorm = dotv(&g, &g).sqrt();
            let tol = 0.5f64.min(gnorm.sqrt()) * gnorm;
            let mut d = vec![0.0; dim];
            let mut r: Vec<f64> = g.iter().map(|v| -v).collect();
            let mut zr: Vec<f64> = m.iter().zip(&r).map(|(a, b)| a * b).collect();
            let mut q = zr.clone();
            let mut rz = dotv(&r, &zr);
            for _ in 0..CG_MAXIT {
                self.x.dot(&self.idx, &q, &mut xq);
                for k in 0..n {
                    hv[k] = h[k] * xq[k];
                }
                self.x.tdot(&self.idx, &hv, &mut aq);
                for j in 0..dim {
                    aq[j] += self.lam[j] * q[j];
                }
                let a = rz / dotv(&q, &aq);
                for j in 0..dim {
                    d[j] += a * q[j];
                    r[j] -= a * aq[j];
                }
                if dotv(&r, &r).sqrt() <= tol {
                    break;
                }
                for j in 0..dim {
                    zr[j] = m[j] * r[j];
                }
                let rz_new = dotv(&r, &zr);
                let beta = rz_new / rz;
                for j in 0..dim {
                    q[j] = zr[j] + beta * q[j];
                }
                rz = rz_new;
            }
            let gd = dotv(&g, &d);
            let mut step = 1.0;
            let mut next = vec![0.0; dim];
            let mut g_next = vec![0.0; dim];
            let mut f_next = f;
            for _ in 0..40 {
                for j in 0..dim {
                    next[j] = coef[j] + step * d[j];
                }
                f_next = self.objective(&next, &mut z, &mut g_next);
                if f_next <= f + 1e-4 * step * gd {
                    break;
                }
                step *= 0.5;
            }
            coef = next;
            g = g_next;
            f = f_next;
        }
        coef
    }
}

/// Weighted Platt scaling `p = sigmoid(a z + b)` by Newton's method from (1, 0).
pub fn platt(z: &[f64], y: &[f64], w: &[f64]) -> (f64, f64) {
    let total: f64 = w.iter().sum();
    if total <= 0.0 {
        return (1.0, 0.0);
    }
    let (mut a, mut b) = (1.0, 0.0);
    for _ in 0..100 {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for k in 0..z.len() {
            let wn = w[k] / total;
            let p = sigmoid(a * z[k] + b);
            let r = wn * (p - y[k]);
            let h = wn * p * (1.0 - p);
            ga += r * z[k];
            gb += r;
            haa += h * z[k] * z[k];
            hab += h * z[k];
            hbb += h;
        }
        ga += 1e-6 * (a - 1.0);
        haa += 1e-6;
        hbb += 1e-12;
        let det = haa * hbb - hab * hab;
        let da = (hbb * ga - hab * gb) / det;
        let db = (haa * gb - hab * ga) / det;
        a -= da;
        b -= db;
        if da.abs() + db.abs() < 1e-12 {
            break;
        }
    }
    (a, b)
}

/// What training produced: the model and the rows it learned from.
pub struct Trained {
    /// The model (weights rounded to f32 as stored).
    pub model: NeedModel,
    /// Rows trained on, per group.
    pub rows: BTreeMap<String, usize>,
}

/// Trains on `rows` with a known label whose split is in `splits`.
/// `progress` hears about each fit.
pub fn train(
    rows: &[Row],
    splits: &[Split],
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Trained, ModelError> {
    let sub: Vec<&Row> = rows
        .iter()
        .filter(|r| r.label().is_some() && splits.contains(&r.split()))
        .collect();
    if sub.is_empty() {
        return Err(ModelError(
            "no labelled rows to train on (rows need required_tier \"cheap\" or \"premium\")"
                .into(),
        ));
    }
    let (x, kinds) = Design::build(&sub);
    let lam = x.penalties();
    let y: Vec<f64> = sub
        .iter()
        .map(|r| if r.label() == Some(true) { 1.0 } else { 0.0 })
        .collect();
    let weight: Vec<f64> = sub.iter().map(|r| r.weight()).collect();
    let folds: Vec<u64> = sub.iter().map(|r| r.fold()).collect();
    let problem = |idx: Vec<usize>| {
        let total: f64 = idx.iter().map(|&i| weight[i]).sum();
        Problem {
            x: &x,
            y: idx.iter().map(|&i| y[i]).collect(),
            w: idx.iter().map(|&i| weight[i] / total).collect(),
            idx,
            lam: &lam,
        }
    };
    // Five fits for the cross-fitted logits and the final one, spread over the
    // cores; each is deterministic, so the result does not depend on the order.
    let jobs: Vec<Option<u64>> = (0..FOLDS).map(Some).chain([None]).collect();
    let fits = run_parallel(&jobs, |job| {
        let idx: Vec<usize> = match job {
            Some(f) => (0..sub.len()).filter(|&i| folds[i] != *f).collect(),
            None => (0..sub.len()).collect(),
        };
        let coef = problem(idx).solve();
        progress(&match job {
            Some(f) => format!("fold {} of {FOLDS} fitted", f + 1),
            None => "final fit done".into(),
        });
        coef
    });
    let mut oof = vec![0.0; sub.len()];
    for (f, coef) in (0..FOLDS).zip(&fits) {
        let held: Vec<usize> = (0..sub.len()).filter(|&i| folds[i] == f).collect();
        let mut z = vec![0.0; held.len()];
        x.dot(&held, coef, &mut z);
        for (k, &i) in held.iter().enumerate() {
            oof[i] = z[k];
        }
    }
    let mut platt_ab = [(1.0, 0.0); KINDS];
    for (k, ab) in platt_ab.iter_mut().enumerate() {
        let m: Vec<usize> = (0..sub.len()).filter(|&i| kinds[i] == k).collect();
        let pick = |v: &[f64]| m.iter().map(|&i| v[i]).collect::<Vec<_>>();
        *ab = platt(&pick(&oof), &pick(&y), &pick(&weight));
    }
    let coef = &fits[FOLDS as usize];
    let mut full = vec![0.0; DIM];
    for (j, &g) in x.global.iter().enumerate() {
        full[g as usize] = coef[j];
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in &sub {
        *counts.entry(r.group()).or_default() += 1;
    }
    let mut meta = serde_json::Map::new();
    meta.insert(
        "trained_on".into(),
        splits
            .iter()
            .map(|s| match s {
                Split::Train => "train",
                Split::Dev => "dev",
            })
            .collect::<Vec<_>>()
            .into(),
    );
    meta.insert(
        "rows".into(),
        serde_json::to_value(&counts).unwrap_or_default(),
    );
    meta.insert("lambda_hash".into(), LAMBDA_HASH.to_vec().into());
    meta.insert("lambda_dense".into(), LAMBDA_DENSE.into());
    let weights: serde_json::Map<String, serde_json::Value> = ROW_WEIGHT
        .iter()
        .map(|(g, w)| ((*g).to_owned(), (*w).into()))
        .collect();
    meta.insert("row_weight".into(), weights.into());
    let model = NeedModel::from_parts(&full, platt_ab, meta)?;
    Ok(Trained {
        model,
        rows: counts,
    })
}

/// `f` over `jobs` on up to as many threads as there are cores; results in job order.
fn run_parallel<J: Sync, R: Send>(jobs: &[J], f: impl Fn(&J) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(jobs.len())
        .max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::Mutex::new(Vec::with_capacity(jobs.len()));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    let r = f(job);
                    if let Ok(mut d) = done.lock() {
                        d.push((i, r));
                    }
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_default();
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

//! The need on the catalog's quality scale. Routing asks for a quality per job;
//! the learned need says how likely a cheap model is to fall short. The scale
//! turns one into the other, anchored on the catalog: below the threshold, a
//! job needs the best quality found in the cheapest third of the catalog (by
//! output price), so a bottom-third model qualifies; at or above it, a job needs
//! just more than the best quality below the top third, so only a top-third
//! model does. Each category (and each pair of a category with a close second,
//! whose quality is the lower of the two) has its own anchors.

use serde::Serialize;

use crate::catalog::{Catalog, PriceBand};
use crate::vocab::TaskCategory;

/// The two qualities a job of one category can need.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Anchors {
    /// What a job below the threshold needs: the best bottom-third quality.
    pub cheap: f64,
    /// What a job at or above the threshold needs: just above the best quality
    /// below the top third (at most the best top-third quality).
    pub premium: f64,
}

/// Anchors per category and alternative, computed once per catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct NeedScale {
    /// `[category][alternative + 1]`, alternative 0 meaning none.
    anchors: [[Anchors; 9]; 8],
}

impl NeedScale {
    /// The anchors of `catalog`.
    pub fn new(catalog: &Catalog) -> Self {
        let bands = catalog.price_bands();
        let mut anchors = [[Anchors {
            cheap: 0.0,
            premium: 0.0,
        }; 9]; 8];
        for c in TaskCategory::ALL {
            for (a, slot) in anchors[c.index()].iter_mut().enumerate() {
                let alt = a.checked_sub(1).map(|i| TaskCategory::ALL[i]);
                let quality = |m: &crate::catalog::ModelSpec| match alt {
                    Some(alt) => m.quality_for(c).min(m.quality_for(alt)),
                    None => m.quality_for(c),
                };
                let best = |keep: &dyn Fn(PriceBand) -> bool| {
                    catalog
                        .models()
                        .iter()
                        .zip(&bands)
                        .filter(|(_, b)| keep(**b))
                        .map(|(m, _)| quality(m))
                        .fold(0.0f64, f64::max)
                };
                let cheap = best(&|b| b == PriceBand::Bottom);
                let below_top = best(&|b| b != PriceBand::Top);
                let top = best(&|b| b == PriceBand::Top);
                let just_above = ((below_top + 0.005) * 1000.0).round() / 1000.0;
                *slot = Anchors {
                    cheap,
                    premium: just_above.min(top).max(cheap),
                };
            }
        }
        Self { anchors }
    }

    /// The anchors for a job of `category` (with a close second `alternative`).
    pub fn anchors(&self, category: TaskCategory, alternative: Option<TaskCategory>) -> Anchors {
        let a = alternative.map_or(0, |c| c.index() + 1);
        self.anchors[category.index()][a]
    }
}

//! Alerts: one record each time a watched value crosses a threshold (a node's
//! spend passing 80% of its budget, a circuit opening, an error rate or a lag
//! going over its limit) and each time it comes back. Workers publish them as
//! JSON to the compacted alerts topic (`kafka.topics.alerts`), keyed by
//! [`Alert::key`]: several workers that see the same crossing write the same
//! key, and compaction keeps the newest state of each. The usage sink reads
//! the topic and sends each transition once to `[alerts] webhook_url`.
//!
//! Pure data. The record accepts fields it does not know (unlike jobs), so a
//! newer worker may add one without an older sink refusing its alerts.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What crossed a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A node's month-to-date spend (in flight included) against its budget;
    /// thresholds are fractions of the budget (0.5, 0.8, 1.0).
    BudgetThreshold,
    /// A node's quota (jobs or tokens per minute or day) is used up.
    QuotaExhausted,
    /// A deployment's circuit breaker opened.
    CircuitOpen,
    /// A deployment's error rate over its window.
    ErrorRate,
    /// A deployment's latency.
    Latency,
    /// Messages sent to a dead-letter topic.
    DeadLetters,
    /// A consumer group's lag.
    ConsumerLag,
}

impl AlertKind {
    /// Every kind.
    pub const ALL: [AlertKind; 7] = [
        AlertKind::BudgetThreshold,
        AlertKind::QuotaExhausted,
        AlertKind::CircuitOpen,
        AlertKind::ErrorRate,
        AlertKind::Latency,
        AlertKind::DeadLetters,
        AlertKind::ConsumerLag,
    ];

    /// The wire name (`budget_threshold`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::BudgetThreshold => "budget_threshold",
            AlertKind::QuotaExhausted => "quota_exhausted",
            AlertKind::CircuitOpen => "circuit_open",
            AlertKind::ErrorRate => "error_rate",
            AlertKind::Latency => "latency",
            AlertKind::DeadLetters => "dead_letters",
            AlertKind::ConsumerLag => "consumer_lag",
        }
    }

    /// The kind of a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the value is past the threshold (`firing`) or back (`resolved`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The value crossed the threshold.
    Firing,
    /// The value is back on the right side of it.
    Resolved,
}

impl AlertState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

impl fmt::Display for AlertState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One crossing, as published to the alerts topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// What crossed.
    pub kind: AlertKind,
    /// Crossed (`firing`) or back (`resolved`).
    pub state: AlertState,
    /// Where: an org node path (`acme/retail`), a deployment name, a consumer
    /// group, as the kind says.
    pub node: String,
    /// The threshold crossed, in the value's unit (a fraction of the budget,
    /// a rate, milliseconds, messages).
    pub threshold: f64,
    /// The value when it crossed.
    pub value: f64,
    /// When it crossed.
    pub at: DateTime<Utc>,
    /// The period the crossing belongs to, free text (`2026-11` for a monthly
    /// budget, `2026-11-25` for a daily quota; empty when the kind has none):
    /// the same threshold crossed again next month is another alert.
    #[serde(default)]
    pub period: String,
}

impl Alert {
    /// A crossing into `firing`.
    pub fn firing(
        kind: AlertKind,
        node: impl Into<String>,
        threshold: f64,
        value: f64,
        at: DateTime<Utc>,
        period: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            state: AlertState::Firing,
            node: node.into(),
            threshold,
            value,
            at,
            period: period.into(),
        }
    }

    /// The same crossing, back: `resolved` with the value and time it came back.
    pub fn resolved(&self, value: f64, at: DateTime<Utc>) -> Self {
        Self {
            state: AlertState::Resolved,
            value,
            at,
            ..self.clone()
        }
    }

    /// The record's Kafka key, `kind|node|threshold|period`: one per crossing
    /// whatever its state, so the compacted topic keeps the newest state of
    /// each and two workers reporting one crossing write one key. The
    /// threshold is written as Rust's shortest round-trip form (`0.8`, `100`).
    pub fn key(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.kind.as_str(),
            self.node,
            self.threshold,
            self.period
        )
    }
}

/// Where a watched value stands against its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Past the threshold: fires, unless already firing.
    Over,
    /// Back on the right side: resolves, if firing.
    Under,
    /// Between the threshold and where it clears (hysteresis, or a half-open
    /// circuit): nothing changes.
    Between,
}

impl Side {
    /// `value` against a threshold it fires at (`value >= fire_at`) and clears
    /// below (`value < clear_below`; equal to `fire_at` for no hysteresis).
    pub fn of(value: f64, fire_at: f64, clear_below: f64) -> Self {
        if value >= fire_at {
            Side::Over
        } else if value < clear_below {
            Side::Under
        } else {
            Side::Between
        }
    }
}

/// One reading of a watched value.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading<'a> {
    /// What is watched.
    pub kind: AlertKind,
    /// Where (node path, deployment, topic).
    pub node: &'a str,
    /// The threshold, as the alert states it.
    pub threshold: f64,
    /// The value now.
    pub value: f64,
    /// Where the value stands.
    pub side: Side,
    /// The period it belongs to (`""` when the kind has none).
    pub period: &'a str,
}

/// The crossings one process has seen: which alerts are firing. Each reading
/// yields the transitions it causes: `firing` once when a value passes its
/// threshold, `resolved` once when it comes back, and, when a firing alert's
/// period ends (the month of a budget, the minute or day of a quota), the old
/// period's alert resolves and the new period starts unfired. Pure.
#[derive(Debug, Clone, Default)]
pub struct AlertWatch {
    firing: HashMap<(AlertKind, String, u64), Alert>,
}

impl AlertWatch {
    /// Takes one reading at `at`; returns the transitions it causes, in order.
    pub fn observe(&mut self, r: &Reading<'_>, at: DateTime<Utc>) -> Vec<Alert> {
        let mut out = Vec::new();
        let slot = (r.kind, r.node.to_owned(), r.threshold.to_bits());
        if let Some(fired) = self.firing.get(&slot) {
            if fired.period != r.period {
                out.push(fired.resolved(r.value, at));
                self.firing.remove(&slot);
            } else if r.side == Side::Under {
                out.push(fired.resolved(r.value, at));
                self.firing.remove(&slot);
                return out;
            } else {
                return out;
            }
        }
        if r.side == Side::Over {
            let alert = Alert::firing(r.kind, r.node, r.threshold, r.value, at, r.period);
            out.push(alert.clone());
            self.firing.insert(slot, alert);
        }
        out
    }

    /// The alerts firing now.
    pub fn firing(&self) -> impl Iterator<Item = &Alert> {
        self.firing.values()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_795_600_000 + s, 0).unwrap()
    }

    #[test]
    fn the_key_names_the_crossing_not_its_state() {
        let fired = Alert::firing(
            AlertKind::BudgetThreshold,
            "acme/retail",
            0.8,
            0.8125,
            at(0),
            "2026-11",
        );
        assert_eq!(fired.key(), "budget_threshold|acme/retail|0.8|2026-11");
        let back = fired.resolved(0.4, at(60));
        assert_eq!(back.state, AlertState::Resolved);
        assert_eq!(back.key(), fired.key());
        let full = Alert::firing(
            AlertKind::BudgetThreshold,
            "acme/retail",
            1.0,
            1.01,
            at(0),
            "2026-11",
        );
        assert_eq!(full.key(), "budget_threshold|acme/retail|1|2026-11");
        let next_month = Alert {
            period: "2026-12".into(),
            ..fired.clone()
        };
        assert_ne!(next_month.key(), fired.key());
        let lag = Alert::firing(
            AlertKind::ConsumerLag,
            "switchyard-workers",
            10_000.0,
            12_345.0,
            at(0),
            "",
        );
        assert_eq!(lag.key(), "consumer_lag|switchyard-workers|10000|");
    }

    #[test]
    fn the_wire_form_has_the_documented_fields_and_names() {
        let a = Alert::firing(AlertKind::CircuitOpen, "openai-main", 1.0, 1.0, at(5), "");
        let v = serde_json::to_value(&a).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "at",
                "kind",
                "node",
                "period",
                "state",
                "threshold",
                "value"
            ]
        );
        assert_eq!(v["kind"], "circuit_open");
        assert_eq!(v["state"], "firing");
        assert_eq!(v["at"], "2026-11-25T09:46:45Z");
        let back: Alert = serde_json::from_value(v).unwrap();
        assert_eq!(back, a);
        for kind in AlertKind::ALL {
            let text = serde_json::to_value(kind).unwrap();
            assert_eq!(text, kind.as_str());
            assert_eq!(AlertKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(AlertKind::parse("disk_full"), None);
    }

    #[test]
    fn a_newer_writers_fields_are_ignored_and_a_missing_period_is_empty() {
        let text = r#"{"kind":"latency","state":"resolved","node":"anthropic-main","threshold":2500,"value":900,"at":"2026-11-25T10:00:00Z","severity":"page"}"#;
        let a: Alert = serde_json::from_str(text).unwrap();
        assert_eq!(a.kind, AlertKind::Latency);
        assert_eq!(a.state, AlertState::Resolved);
        assert_eq!(a.period, "");
        assert_eq!(a.key(), "latency|anthropic-main|2500|");
    }
    fn reading(kind: AlertKind, value: f64, side: Side, period: &str) -> Reading<'_> {
        Reading {
            kind,
            node: "acme/retail",
            threshold: 0.8,
            value,
            side,
            period,
        }
    }

    #[test]
    fn a_watch_fires_once_per_crossing_and_resolves_once() {
        let mut w = AlertWatch::default();
        let k = AlertKind::BudgetThreshold;
        let mut sent = Vec::new();
        for (i, (v, side)) in [
            (0.1, Side::Under),
            (0.81, Side::Over),
            (0.9, Side::Over),
            (0.85, Side::Between),
            (0.95, Side::Over),
            (0.2, Side::Under),
            (0.1, Side::Under),
            (0.9, Side::Over),
        ]
        .into_iter()
        .enumerate()
        {
            sent.extend(w.observe(&reading(k, v, side, "2026-11"), at(i as i64)));
        }
        let states: Vec<(AlertState, f64)> = sent.iter().map(|a| (a.state, a.value)).collect();
        assert_eq!(
            states,
            [
                (AlertState::Firing, 0.81),
                (AlertState::Resolved, 0.2),
                (AlertState::Firing, 0.9)
            ]
        );
        assert!(sent.iter().all(|a| a.key() == sent[0].key()));
        assert_eq!(w.firing().count(), 1);
    }

    #[test]
    fn a_new_period_resolves_the_old_ones_alert_and_may_fire_its_own() {
        let mut w = AlertWatch::default();
        let k = AlertKind::QuotaExhausted;
        let fired = w.observe(&reading(k, 1.0, Side::Over, "minute 10:03"), at(0));
        assert_eq!(fired.len(), 1);
        let rolled = w.observe(&reading(k, 0.0, Side::Under, "minute 10:04"), at(60));
        assert_eq!(rolled.len(), 1);
        assert_eq!(rolled[0].state, AlertState::Resolved);
        assert_eq!(rolled[0].key(), fired[0].key());
        assert!(
            w.observe(&reading(k, 0.0, Side::Under, "minute 10:04"), at(61))
                .is_empty()
        );
        let both = w.observe(&reading(k, 1.0, Side::Over, "minute 10:05"), at(120));
        assert_eq!(both.len(), 1, "nothing was firing");
        let next = w.observe(&reading(k, 1.0, Side::Over, "minute 10:06"), at(180));
        assert_eq!(
            next.iter()
                .map(|a| (a.state, a.period.as_str()))
                .collect::<Vec<_>>(),
            [
                (AlertState::Resolved, "minute 10:05"),
                (AlertState::Firing, "minute 10:06")
            ]
        );
    }

    #[test]
    fn hysteresis_keeps_a_value_near_its_threshold_from_flapping() {
        assert_eq!(Side::of(0.5, 0.5, 0.4), Side::Over);
        assert_eq!(Side::of(0.45, 0.5, 0.4), Side::Between);
        assert_eq!(Side::of(0.39, 0.5, 0.4), Side::Under);
        assert_eq!(Side::of(0.49, 0.5, 0.5), Side::Under);
    }
}

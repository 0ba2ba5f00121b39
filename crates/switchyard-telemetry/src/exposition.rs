//! The Prometheus text exposition format, version 0.0.4: a [`Family`] writes
//! its `# HELP` and `# TYPE` lines once, then its samples, so that a family's
//! samples stay together; label values and help texts are escaped; values are
//! written as Prometheus parses them (`+Inf`, `-Inf`, `NaN`). Histograms are
//! written as cumulative `_bucket{le=…}` samples ending with `le="+Inf"`, then
//! `_sum` and `_count`. Names are the caller's constants: they are not checked
//! here (see [`is_valid_metric_name`], which the tests of every exposer use).

use std::fmt::Write as _;

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type, as `# TYPE` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// Only goes up (resets when the process restarts); its name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations counted into buckets, with their sum and count.
    Histogram,
}

impl MetricType {
    /// The word `# TYPE` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        }
    }
}

/// One metric family being written into an exposition.
pub struct Family<'a> {
    out: &'a mut String,
    name: &'a str,
}

impl<'a> Family<'a> {
    /// Starts a family: writes its `# HELP` and `# TYPE` lines.
    pub fn new(out: &'a mut String, name: &'a str, kind: MetricType, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(out, "# TYPE {name} {}", kind.as_str());
        Self { out, name }
    }

    /// Starts a counter family (`name` ends in `_total`).
    pub fn counter(out: &'a mut String, name: &'a str, help: &str) -> Self {
        Self::new(out, name, MetricType::Counter, help)
    }

    /// Starts a gauge family.
    pub fn gauge(out: &'a mut String, name: &'a str, help: &str) -> Self {
        Self::new(out, name, MetricType::Gauge, help)
    }

    /// Starts a histogram family.
    pub fn histogram(out: &'a mut String, name: &'a str, help: &str) -> Self {
        Self::new(out, name, MetricType::Histogram, help)
    }

    /// One sample of a counter or gauge.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        write_sample(self.out, self.name, "", labels, None, value);
        self
    }

    /// One series of a histogram. `bounds` are the buckets' upper bounds in
    /// increasing order; `counts` holds the observations of each bucket (not
    /// cumulative), one more than `bounds` (the last for observations above
    /// every bound). `_count` is their total.
    pub fn histogram_sample(
        &mut self,
        labels: &[(&str, &str)],
        bounds: &[f64],
        counts: &[u64],
        sum: f64,
    ) -> &mut Self {
        let mut cumulative: u64 = 0;
        for (i, bound) in bounds.iter().enumerate() {
            cumulative += counts.get(i).copied().unwrap_or(0);
            let le = format_value(*bound);
            write_sample(
                self.out,
                self.name,
                "_bucket",
                labels,
                Some(&le),
                cumulative as f64,
            );
        }
        let total: u64 = counts.iter().sum();
        write_sample(
            self.out,
            self.name,
            "_bucket",
            labels,
            Some("+Inf"),
            total as f64,
        );
        write_sample(self.out, self.name, "_sum", labels, None, sum);
        write_sample(self.out, self.name, "_count", labels, None, total as f64);
        self
    }
}

fn write_sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[(&str, &str)],
    le: Option<&str>,
    value: f64,
) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        let le = le.map(|v| ("le", v));
        for (k, v) in labels.iter().copied().chain(le) {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(k);
            out.push_str("=\"");
            out.push_str(&escape_label_value(v));
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(&format_value(value));
    out.push('\n');
}

/// A label value as the format wants it: backslash, double quote and line
/// feed escaped.
pub fn escape_label_value(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// A help text as the format wants it: backslash and line feed escaped.
pub fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A value as Prometheus parses it: integers without a fraction, `+Inf`,
/// `-Inf`, `NaN`.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        v.to_string()
    }
}

/// Whether `name` is a valid metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Whether `name` is a valid label name: `[a-zA-Z_][a-zA-Z0-9_]*`, not
/// starting with the reserved `__`.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_has_help_type_and_escaped_labels() {
        let mut out = String::new();
        Family::counter(
            &mut out,
            "switchyard_things_total",
            "Things seen.\nSecond line with a \\ backslash.",
        )
        .sample(&[("kind", "a\"b\\c\nd"), ("zone", "eu")], 3.0)
        .sample(&[], 0.5);
        assert_eq!(
            out,
            "# HELP switchyard_things_total Things seen.\\nSecond line with a \\\\ backslash.\n\
             # TYPE switchyard_things_total counter\n\
             switchyard_things_total{kind=\"a\\\"b\\\\c\\nd\",zone=\"eu\"} 3\n\
             switchyard_things_total 0.5\n"
        );
    }

    #[test]
    fn values_are_written_as_prometheus_parses_them() {
        assert_eq!(format_value(0.0), "0");
        assert_eq!(format_value(12.0), "12");
        assert_eq!(format_value(0.05), "0.05");
        assert_eq!(format_value(1e21), "1000000000000000000000");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(-2.5), "-2.5");
    }

    #[test]
    fn a_histogram_is_cumulative_and_ends_with_inf_sum_and_count() {
        let mut out = String::new();
        Family::histogram(&mut out, "job_seconds", "Job time.").histogram_sample(
            &[("status", "ok")],
            &[0.5, 1.0, 2.5],
            &[2, 0, 3, 1],
            7.25,
        );
        let samples: Vec<&str> = out.lines().skip(2).collect();
        assert_eq!(
            samples,
            [
                "job_seconds_bucket{status=\"ok\",le=\"0.5\"} 2",
                "job_seconds_bucket{status=\"ok\",le=\"1\"} 2",
                "job_seconds_bucket{status=\"ok\",le=\"2.5\"} 5",
                "job_seconds_bucket{status=\"ok\",le=\"+Inf\"} 6",
                "job_seconds_sum{status=\"ok\"} 7.25",
                "job_seconds_count{status=\"ok\"} 6",
            ]
        );
        assert!(out.starts_with("# HELP job_seconds Job time.\n# TYPE job_seconds histogram\n"));
    }

    #[test]
    fn a_histogram_without_labels_has_only_le() {
        let mut out = String::new();
        Family::histogram(&mut out, "wait_seconds", "Waits.").histogram_sample(
            &[],
            &[1.0],
            &[0, 0],
            0.0,
        );
        assert!(out.contains("wait_seconds_bucket{le=\"1\"} 0\n"));
        assert!(out.contains("wait_seconds_bucket{le=\"+Inf\"} 0\n"));
        assert!(out.contains("wait_seconds_sum 0\nwait_seconds_count 0\n"));
    }

    #[test]
    fn names_are_checked_as_prometheus_does() {
        assert!(is_valid_metric_name("switchyard_jobs_total"));
        assert!(is_valid_metric_name("a:b_c9"));
        assert!(!is_valid_metric_name("9lives"));
        assert!(!is_valid_metric_name("has-dash"));
        assert!(!is_valid_metric_name(""));
        assert!(is_valid_label_name("deployment"));
        assert!(!is_valid_label_name("__name__"));
        assert!(!is_valid_label_name("a:b"));
    }
}

//! What every Switchyard process exposes about itself: `switchyard_build_info`
//! (its version and which command it runs), `process_start_time_seconds`, and
//! on Linux `process_cpu_seconds_total` and `process_resident_memory_bytes`,
//! read from `/proc/self` at each scrape (the names Prometheus's own client
//! libraries use, so that standard dashboards find them).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::exposition::Family;

/// Linux reports CPU time in clock ticks of `USER_HZ`, which the kernel's ABI
/// fixes at 100 per second for user space.
const USER_HZ: f64 = 100.0;

/// The process's build and start.
#[derive(Debug, Clone)]
pub struct ProcessInfo {
    version: String,
    component: String,
    start_unix_seconds: f64,
}

impl ProcessInfo {
    /// This process, started now (as far as telemetry can tell), running
    /// `component` (`worker`, `sink`, `dev`) of Switchyard `version`.
    pub fn new(version: &str, component: &str) -> Self {
        let start_unix_seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        Self {
            version: version.to_owned(),
            component: component.to_owned(),
            start_unix_seconds,
        }
    }

    /// Writes the process families.
    pub fn render(&self, out: &mut String) {
        Family::gauge(
            out,
            "switchyard_build_info",
            "Always 1; the labels say which Switchyard version runs which command.",
        )
        .sample(
            &[
                ("version", self.version.as_str()),
                ("component", self.component.as_str()),
            ],
            1.0,
        );
        Family::gauge(
            out,
            "process_start_time_seconds",
            "When the process started, seconds since the Unix epoch.",
        )
        .sample(&[], self.start_unix_seconds);
        if let Some(cpu) = cpu_seconds() {
            Family::counter(
                out,
                "process_cpu_seconds_total",
                "User and system CPU time the process has used, seconds.",
            )
            .sample(&[], cpu);
        }
        if let Some(rss) = resident_bytes() {
            Family::gauge(
                out,
                "process_resident_memory_bytes",
                "Resident memory of the process, bytes.",
            )
            .sample(&[], rss);
        }
    }
}

/// utime + stime from `/proc/self/stat` (fields 14 and 15, counted after the
/// command name, which may hold spaces and ends at the last `)`).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_cpu_seconds(&stat)
}

fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// `VmRSS` from `/proc/self/status`, in bytes.
fn resident_bytes() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_resident_bytes(&status)
}

fn parse_resident_bytes(status: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_a_command_name_with_spaces() {
        let stat =
            "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 123 0 0";
        assert_eq!(parse_cpu_seconds(stat), Some(3.0));
        assert_eq!(parse_cpu_seconds("garbage"), None);
    }

    #[test]
    fn resident_memory_is_read_in_bytes() {
        let status = "Name:\tswitchyard\nVmPeak:\t  9000 kB\nVmRSS:\t  2048 kB\n";
        assert_eq!(parse_resident_bytes(status), Some(2048.0 * 1024.0));
        assert_eq!(parse_resident_bytes("Name: x\n"), None);
    }

    #[test]
    fn the_process_families_are_rendered() {
        let mut out = String::new();
        ProcessInfo::new("1.2.3", "worker").render(&mut out);
        assert!(out.contains("switchyard_build_info{version=\"1.2.3\",component=\"worker\"} 1\n"));
        assert!(out.contains("# TYPE process_start_time_seconds gauge\n"));
        if cfg!(target_os = "linux") {
            assert!(out.contains("# TYPE process_cpu_seconds_total counter\n"));
            assert!(out.contains("# TYPE process_resident_memory_bytes gauge\n"));
        }
    }
}

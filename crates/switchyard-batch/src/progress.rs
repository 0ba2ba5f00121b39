//! Progress on stderr: a bar (indicatif) when stderr is a terminal, plain lines
//! at most every few seconds otherwise (CI logs, pipes), nothing in tests.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// What a step counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Lines, jobs or results.
    Items,
    /// Bytes of a file.
    Bytes,
}

/// Receives progress of a long step. Implementations must be cheap: `advance`
/// is called for every line or result.
pub trait Progress: Send + Sync {
    /// A step begins; `total` is the number of units when known.
    fn start(&self, step: &str, unit: Unit, total: Option<u64>);
    /// `done` units of the current step are finished.
    fn advance(&self, done: u64);
    /// The current step is over.
    fn finish(&self);
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _step: &str, _unit: Unit, _total: Option<u64>) {}
    fn advance(&self, _done: u64) {}
    fn finish(&self) {}
}

/// A bar on a terminal, lines elsewhere; always on stderr.
pub struct ConsoleProgress {
    state: Mutex<ConsoleState>,
    terminal: bool,
}

struct ConsoleState {
    bar: Option<ProgressBar>,
    step: String,
    total: Option<u64>,
    unit: Unit,
    done: u64,
    started: Instant,
    last_line: Instant,
}

/// Interval between plain progress lines.
const LINE_EVERY: Duration = Duration::from_secs(2);

impl ConsoleProgress {
    /// Chooses the bar or the lines from whether stderr is a terminal.
    pub fn stderr() -> Self {
        Self::new(std::io::stderr().is_terminal())
    }

    /// A bar when `terminal`, else plain lines.
    pub fn new(terminal: bool) -> Self {
        let now = Instant::now();
        Self {
            terminal,
            state: Mutex::new(ConsoleState {
                bar: None,
                step: String::new(),
                total: None,
                unit: Unit::Items,
                done: 0,
                started: now,
                last_line: now,
            }),
        }
    }
}

impl Progress for ConsoleProgress {
    fn start(&self, step: &str, unit: Unit, total: Option<u64>) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        if let Some(bar) = s.bar.take() {
            bar.finish_and_clear();
        }
        s.step = step.to_owned();
        s.total = total;
        s.unit = unit;
        s.done = 0;
        s.started = Instant::now();
        s.last_line = Instant::now();
        if self.terminal {
            let bar = match total {
                Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()),
                None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            };
            let template = match (unit, total.is_some()) {
                (Unit::Items, true) => {
                    "{msg:>12} [{bar:40}] {human_pos}/{human_len} ({per_sec}, eta {eta})"
                }
                (Unit::Items, false) => "{msg:>12} {spinner} {human_pos} ({per_sec})",
                (Unit::Bytes, true) => {
                    "{msg:>12} [{bar:40}] {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, eta {eta})"
                }
                (Unit::Bytes, false) => {
                    "{msg:>12} {spinner} {binary_bytes} ({binary_bytes_per_sec})"
                }
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(step.to_owned());
            bar.enable_steady_tick(Duration::from_millis(200));
            s.bar = Some(bar);
        }
    }

    fn advance(&self, done: u64) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        s.done = done;
        if let Some(bar) = &s.bar {
            bar.set_position(done);
            return;
        }
        if !self.terminal && s.last_line.elapsed() >= LINE_EVERY {
            s.last_line = Instant::now();
            eprintln!("{}", line(&s));
        }
    }

    fn finish(&self) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        match s.bar.take() {
            Some(bar) => bar.finish_and_clear(),
            None if !s.step.is_empty() => {
                eprintln!("{} (done in {:.1?})", line(&s), s.started.elapsed())
            }
            None => {}
        }
        s.step.clear();
    }
}

fn line(s: &ConsoleState) -> String {
    let unit = match s.unit {
        Unit::Items => "",
        Unit::Bytes => " bytes",
    };
    match s.total {
        Some(t) if t > 0 => format!(
            "{}: {}/{}{unit} ({:.0}%)",
            s.step,
            s.done,
            t,
            s.done as f64 * 100.0 / t as f64
        ),
        _ => format!("{}: {}{unit}", s.step, s.done),
    }
}

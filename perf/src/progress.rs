//! The progress line: an `indicatif` bar on a terminal, a plain line every few seconds
//! otherwise (CI logs, `| tee`), nothing in tests.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    plain: bool,
    last_plain: Instant,
    label: String,
}

impl Progress {
    /// `enabled: false` prints nothing at all.
    pub fn new(enabled: bool, label: &str) -> Progress {
        let tty = std::io::stderr().is_terminal();
        Progress {
            bar: None,
            plain: enabled && !tty,
            last_plain: Instant::now() - Duration::from_secs(60),
            label: label.to_string(),
        }
        .with_bar(enabled && tty)
    }

    fn with_bar(mut self, on: bool) -> Progress {
        if on {
            let bar = ProgressBar::new(1);
            let style = ProgressStyle::with_template(
                "{prefix:>10} [{elapsed_precise}] {bar:30.cyan/blue} {pos:>7}/{len:7} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style.progress_chars("=> "));
            bar.enable_steady_tick(Duration::from_millis(200));
            self.bar = Some(bar);
        }
        self
    }

    /// Starts a phase whose progress goes from 0 to `len`.
    pub fn phase(&mut self, name: &str, len: u64) {
        if let Some(b) = &self.bar {
            b.set_prefix(name.to_string());
            b.set_length(len.max(1));
            b.set_position(0);
            b.reset_elapsed();
        }
        if self.plain {
            eprintln!("[{}] {name}", self.label);
            self.last_plain = Instant::now();
        }
    }

    pub fn update(&mut self, pos: u64, msg: String) {
        if let Some(b) = &self.bar {
            b.set_position(pos);
            b.set_message(msg);
        } else if self.plain && self.last_plain.elapsed() >= Duration::from_secs(2) {
            self.last_plain = Instant::now();
            eprintln!("[{}] {msg}", self.label);
        }
    }

    /// Prints a line above the bar (or plainly).
    pub fn note(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(format!("[{}] {msg}", self.label)),
            None if self.plain => eprintln!("[{}] {msg}", self.label),
            None => {}
        }
    }

    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

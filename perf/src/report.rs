//! The report folder: `summary.md` for people, one `.hgrm` per latency histogram for tools
//! (and for comparing runs), and `latency.svg`, the percentile plot.
//!
//! Everything a scenario prints is built from the same few helpers so every report reads
//! the same way: milliseconds with three decimals, percentiles p50/p90/p99/p99.9/max.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::error::BenchError;
use crate::hgrm;
use crate::run::Cpu;

/// `./bench-reports/<scenario>-<local time>`.
pub fn default_dir(scenario: &str) -> PathBuf {
    let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S");
    PathBuf::from("bench-reports").join(format!("{scenario}-{stamp}"))
}

/// Nanoseconds as milliseconds with three decimals.
pub fn ms(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

pub fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.1}%", 100.0 * part as f64 / whole as f64)
    }
}

/// A markdown table of latency percentiles, one row per histogram (nanoseconds).
pub fn latency_table(rows: &[(&str, &Histogram<u64>)]) -> String {
    let mut o = String::from(
        "| latency (ms) | count | mean | p50 | p90 | p99 | p99.9 | max |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (name, h) in rows {
        if h.is_empty() {
            let _ = writeln!(o, "| {name} | 0 | - | - | - | - | - | - |");
            continue;
        }
        let q = |x: f64| ms(h.value_at_quantile(x));
        let _ = writeln!(
            o,
            "| {name} | {} | {:.3} | {} | {} | {} | {} | {} |",
            h.len(),
            h.mean() / 1e6,
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            ms(h.max())
        );
    }
    o
}

/// The CPU table: seconds, cores kept busy, microseconds per message.
pub fn cpu_table(cpu: &Cpu, server_pid: Option<u32>, messages: u64) -> String {
    let secs = cpu.window.as_secs_f64();
    let mut o = format!(
        "Over {secs:.2} s (the measured window and its drain).\n\n\
         | process | CPU s | cores busy | CPU µs per delivered message |\n|---|---:|---:|---:|\n"
    );
    let row = |o: &mut String, name: &str, d: Option<Duration>| {
        let _ = match d {
            Some(d) => writeln!(
                o,
                "| {name} | {:.3} | {:.2} | {} |",
                d.as_secs_f64(),
                if secs > 0.0 {
                    d.as_secs_f64() / secs
                } else {
                    0.0
                },
                if messages > 0 {
                    format!("{:.2}", d.as_secs_f64() * 1e6 / messages as f64)
                } else {
                    "-".into()
                }
            ),
            None => writeln!(o, "| {name} | - | - | - |"),
        };
    };
    match server_pid {
        Some(pid) => row(&mut o, &format!("server (pid {pid})"), cpu.server),
        None => {
            let _ = writeln!(o, "| server | (pass --server-pid) | - | - |");
        }
    }
    row(&mut o, "generator (this process)", cpu.generator);
    o
}

/// The failure reasons, most frequent first.
pub fn failures_table(failures: &std::collections::BTreeMap<String, u64>) -> String {
    let mut v: Vec<(&String, &u64)> = failures.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut o = String::from("| reason | count |\n|---|---:|\n");
    for (reason, n) in v.iter().take(30) {
        let _ = writeln!(o, "| {} | {n} |", reason.replace('|', "\\|"));
    }
    if v.len() > 30 {
        let _ = writeln!(o, "| ({} more reasons) | |", v.len() - 30);
    }
    o
}

/// Writes the report files into `dir` (created if needed); returns their paths.
pub fn write_folder(
    dir: &Path,
    summary: &str,
    histograms: &[(String, &Histogram<u64>)],
    svg: &str,
) -> Result<Vec<PathBuf>, BenchError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BenchError::Report { path, source }
    };
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    let mut files = Vec::new();
    let mut put = |name: &str, text: &str| -> Result<(), BenchError> {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(err(&p))?;
        files.push(p);
        Ok(())
    };
    put("summary.md", summary)?;
    for (name, h) in histograms {
        put(
            &format!("{name}.hgrm"),
            &hgrm::percentile_distribution(h, hgrm::TICKS_PER_HALF_DISTANCE, 1e6),
        )?;
    }
    put("latency.svg", svg)?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables() {
        let mut h = crate::stats::new_histogram();
        for v in 1..=1000u64 {
            h.record(v * 1_000).unwrap();
        }
        let empty = crate::stats::new_histogram();
        let t = latency_table(&[("ack", &h), ("none", &empty)]);
        assert!(
            t.contains("| ack | 1000 | 0.501 | 0.500 | 0.900 | 0.990 | 0.999 | 1.000 |"),
            "{t}"
        );
        assert!(t.contains("| none | 0 |"));
        assert_eq!(pct(1, 3), "33.3%");
        assert_eq!(pct(0, 0), "-");
        let cpu = Cpu {
            window: Duration::from_secs(2),
            generator: Some(Duration::from_millis(500)),
            server: Some(Duration::from_secs(1)),
        };
        let t = cpu_table(&cpu, Some(7), 1000);
        assert!(
            t.contains("| server (pid 7) | 1.000 | 0.50 | 1000.00 |"),
            "{t}"
        );
        assert!(
            t.contains("| generator (this process) | 0.500 | 0.25 | 500.00 |"),
            "{t}"
        );
    }

    #[test]
    fn folder() {
        let dir = tempfile::tempdir().unwrap();
        let h = crate::stats::new_histogram();
        let files = write_folder(
            &dir.path().join("r"),
            "# hi\n",
            &[("ack".to_string(), &h)],
            "<svg/>",
        )
        .unwrap();
        assert_eq!(files.len(), 3);
        assert!(dir.path().join("r/ack.hgrm").exists());
        assert!(dir.path().join("r/latency.svg").exists());
    }
}

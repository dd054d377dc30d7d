//! HdrHistogram's percentile distribution text (`.hgrm`).
//!
//! This is the format Java's `Histogram.outputPercentileDistribution` prints (and wrk2,
//! and the C port): the HdrHistogram plotter and most latency tooling read it, and it lets
//! two runs be compared side by side. The Rust `hdrhistogram` crate iterates the same
//! percentile steps but has no writer for the text, so it is written here, byte for byte
//! as Java does:
//!
//! ```text
//!        Value     Percentile TotalCount 1/(1-Percentile)
//!
//!      100.000 0.000000000000          1           1.00
//!      ...
//!      600.000 1.000000000000          4
//! #[Mean    =      287.500, StdDeviation   =      188.331]
//! #[Max     =      600.000, Total count    =            4]
//! #[Buckets =           32, SubBuckets     =         2048]
//! ```

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// Percentile steps per half distance to 100%, as the Java default.
pub const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// One line of the distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Highest value equivalent to the recorded value reached (histogram units).
    pub value: u64,
    /// The percentile level iterated to, 0..=100.
    pub percentile: f64,
    /// Values recorded up to and including `value`.
    pub total_count: u64,
}

/// The percentile steps of `h`, as Java's `PercentileIterator` produces them: levels in
/// percent, `ticks_per_half` steps for each halving of the distance to 100%, and a final
/// step at exactly 100%. (The Rust crate's quantile iterator works in fractions, where
/// 0.7 + 0.05 is not 0.75, and so skips steps that Java prints.)
pub fn percentiles(h: &Histogram<u64>, ticks_per_half: u32) -> Vec<Step> {
    let recorded: Vec<(u64, u64)> = h
        .iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect();
    let total = h.len();
    let ticks = u64::from(ticks_per_half.max(1));
    let mut out = Vec::new();
    let (mut idx, mut cum, mut fresh) = (0usize, 0u64, true);
    let (mut level, mut reached_last) = (0.0f64, false);
    'steps: loop {
        if cum >= total {
            if reached_last || total == 0 {
                break;
            }
            level = 100.0;
            reached_last = true;
        }
        loop {
            let Some(&(value, count)) = recorded.get(idx) else {
                break 'steps;
            };
            if fresh {
                cum += count;
                fresh = false;
            }
            let current = 100.0 * cum as f64 / total as f64;
            if count != 0 && current >= level {
                out.push(Step {
                    value,
                    percentile: level,
                    total_count: cum,
                });
                // At 100% the level stays (the next round ends the iteration).
                let halvings = ((100.0 / (100.0 - level)).ln() / 2f64.ln()) as u32;
                let reporting_ticks =
                    ticks.saturating_mul(1u64 << halvings.saturating_add(1).min(62));
                level += 100.0 / reporting_ticks as f64;
                break;
            }
            idx += 1;
            fresh = true;
        }
    }
    out
}

/// The percentile distribution of `h`, values divided by `unit_ratio` (1e6 turns
/// nanoseconds into milliseconds), printed with as many decimals as the histogram has
/// significant digits.
pub fn percentile_distribution(h: &Histogram<u64>, ticks_per_half: u32, unit_ratio: f64) -> String {
    let d = usize::from(h.sigfig());
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    for st in percentiles(h, ticks_per_half) {
        let value = st.value as f64 / unit_ratio;
        let q = st.percentile / 100.0;
        let total = st.total_count;
        if st.percentile != 100.0 {
            let _ = writeln!(
                out,
                "{value:12.d$} {q:2.12} {total:10} {:14.2}",
                1.0 / (1.0 - q)
            );
        } else {
            let _ = writeln!(out, "{value:12.d$} {q:2.12} {total:10}");
        }
    }
    let (mean, sd, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (
            h.mean() / unit_ratio,
            h.stdev() / unit_ratio,
            h.max() as f64 / unit_ratio,
        )
    };
    let _ = writeln!(
        out,
        "#[Mean    = {mean:12.d$}, StdDeviation   = {sd:12.d$}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {max:12.d$}, Total count    = {:12}]",
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_bucket_count(h.sigfig())
    );
    out
}

/// Java's `subBucketCount`: the power of two that holds `2 * 10^sigfig` values.
fn sub_bucket_count(sigfig: u8) -> u64 {
    let largest = 2 * 10u64.pow(u32::from(sigfig));
    let magnitude = (largest as f64).log2().ceil() as u32;
    1 << magnitude.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same four values and parameters as a published HdrHistogram test
    /// (`output_percentile_distribution`, histogram 1..3_600_000_000_000 with 3 digits).
    #[test]
    fn matches_the_reference_output() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        for v in [100, 200, 250, 600] {
            h.record(v).unwrap();
        }
        let expected = "       Value     Percentile TotalCount 1/(1-Percentile)

     100.000 0.000000000000          1           1.00
     100.000 0.100000000000          1           1.11
     100.000 0.200000000000          1           1.25
     200.000 0.300000000000          2           1.43
     200.000 0.400000000000          2           1.67
     200.000 0.500000000000          2           2.00
     250.000 0.550000000000          3           2.22
     250.000 0.600000000000          3           2.50
     250.000 0.650000000000          3           2.86
     250.000 0.700000000000          3           3.33
     250.000 0.750000000000          3           4.00
     600.000 0.775000000000          4           4.44
     600.000 1.000000000000          4
#[Mean    =      287.500, StdDeviation   =      188.331]
#[Max     =      600.000, Total count    =            4]
#[Buckets =           32, SubBuckets     =         2048]
";
        assert_eq!(percentile_distribution(&h, 5, 1.0), expected);
    }

    #[test]
    fn large_histogram_is_consistent() {
        let mut h = crate::stats::new_histogram();
        for i in 1..=100_000u64 {
            h.record(i * 1_000).unwrap(); // 1 µs .. 100 ms
        }
        let text = percentile_distribution(&h, TICKS_PER_HALF_DISTANCE, 1e6);
        let rows: Vec<Vec<f64>> = text
            .lines()
            .skip(2)
            .take_while(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect())
            .collect();
        assert!(rows.len() > 50);
        let last = rows.last().unwrap();
        assert_eq!(last.len(), 3, "the 100% line has no 1/(1-p) column");
        assert_eq!(last[1], 1.0);
        assert_eq!(last[2], 100_000.0);
        assert!((last[0] - 100.0).abs() < 0.1, "max in ms: {}", last[0]);
        for w in rows.windows(2) {
            assert!(w[0][0] <= w[1][0] && w[0][1] <= w[1][1] && w[0][2] <= w[1][2]);
        }
        for r in &rows[..rows.len() - 1] {
            assert_eq!(r.len(), 4);
            assert!((r[3] - 1.0 / (1.0 - r[1])).abs() < 0.01 * r[3]);
        }
        assert!(text.contains("Total count    =       100000]"));
        // The median is about 50 ms.
        let median = rows.iter().find(|r| r[1] >= 0.5).unwrap()[0];
        assert!((median - 50.0).abs() < 0.1, "{median}");
    }

    #[test]
    fn empty_histogram_has_header_and_footer() {
        let h = crate::stats::new_histogram();
        let text = percentile_distribution(&h, 5, 1e6);
        assert!(
            text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n#[Mean")
        );
        assert!(text.contains("Total count    =            0]"));
    }

    #[test]
    fn sub_buckets_as_java() {
        assert_eq!(sub_bucket_count(3), 2048);
        assert_eq!(sub_bucket_count(2), 256);
        assert_eq!(sub_bucket_count(1), 32);
    }
}

//! Whether other processes used the CPU during a measurement.
//!
//! On a small machine a 2-thread benchmark is wrecked by any other busy process (a parallel
//! region waits for its descheduled thread), so every timed run records the share of the
//! machine's CPU that other processes used (`/proc/stat` minus this process's `/proc/self/stat`),
//! and a report is flagged `contaminated` when that share passes a threshold.

use std::time::{Duration, Instant};

/// CPU counters at one instant, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSnapshot {
    /// All CPU time of the machine (busy + idle, every core).
    total: u64,
    /// Busy CPU time of the machine (everything but idle and iowait).
    busy: u64,
    /// User + system time of this process.
    own: u64,
}

/// Parses the aggregate `cpu` line of `/proc/stat` into (total, busy) ticks.
fn parse_stat(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line.split_whitespace().map(str::parse).collect::<Result<_, _>>().ok()?;
    let total: u64 = v.iter().sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total, total - idle))
}

/// Parses utime + stime out of a `/proc/<pid>/stat` line (fields 14 and 15).
fn parse_self_stat(stat: &str) -> Option<u64> {
    // The command name may contain spaces and parentheses; fields restart after the last `)`.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

impl CpuSnapshot {
    /// Reads the counters now (`None` off Linux).
    pub fn take() -> Option<Self> {
        let (total, busy) = parse_stat(&std::fs::read_to_string("/proc/stat").ok()?)?;
        let own = parse_self_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
        Some(Self { total, busy, own })
    }

    /// Percent of the machine's CPU used by other processes between `self` and `later`.
    /// A couple of stray ticks on a short interval count as 0.
    pub fn other_pct(&self, later: &CpuSnapshot) -> Option<f64> {
        let total = later.total.checked_sub(self.total).filter(|&t| t > 0)?;
        let other = (later.busy.saturating_sub(self.busy)).saturating_sub(later.own.saturating_sub(self.own));
        if other < 3 {
            return Some(0.0);
        }
        Some(100.0 * other as f64 / total as f64)
    }
}

/// Percent of the machine busy over `interval` (any process).
pub fn busy_pct(interval: Duration) -> Option<f64> {
    let read = || parse_stat(&std::fs::read_to_string("/proc/stat").ok()?);
    let (t0, b0) = read()?;
    std::thread::sleep(interval);
    let (t1, b1) = read()?;
    (t1 > t0).then(|| 100.0 * (b1 - b0) as f64 / (t1 - t0) as f64)
}

/// Waits up to `max_wait` for the machine to be at most `threshold_pct` busy, calling
/// `on_wait(busy)` each time it checks and finds it busy. Returns the last busy share measured.
pub fn wait_for_idle(max_wait: Duration, threshold_pct: f64, on_wait: &mut dyn FnMut(f64)) -> Option<f64> {
    let start = Instant::now();
    loop {
        let busy = busy_pct(Duration::from_secs(2))?;
        if busy <= threshold_pct || start.elapsed() >= max_wait {
            return Some(busy);
        }
        on_wait(busy);
        std::thread::sleep(Duration::from_secs(8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_and_self_stat() {
        let stat = "cpu  100 5 50 800 20 1 2 0 0 0\ncpu0 50 2 25 400 10 0 1 0 0 0\n";
        assert_eq!(parse_stat(stat), Some((978, 158)));
        let own = "1234 (my (odd) name) R 1 2 3 4 5 6 7 8 9 10 300 40 0 0";
        assert_eq!(parse_self_stat(own), Some(340));
    }

    #[test]
    fn other_share_excludes_own_time_and_ignores_stray_ticks() {
        let a = CpuSnapshot { total: 1000, busy: 100, own: 50 };
        let b = CpuSnapshot { total: 1200, busy: 250, own: 150 };
        // 150 busy ticks, 100 of them ours: 50 of 200.
        assert_eq!(a.other_pct(&b), Some(25.0));
        let c = CpuSnapshot { total: 1200, busy: 202, own: 150 };
        assert_eq!(a.other_pct(&c), Some(0.0));
    }
}

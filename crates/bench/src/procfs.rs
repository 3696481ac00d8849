//! What a process costs, read from `/proc`: CPU time before and after a run, and resident
//! memory sampled while it runs.
//!
//! CPU: `/proc/PID/stat` holds utime + stime for the whole process (exited threads included)
//! but only in clock ticks (10 ms at the usual 100 Hz), too coarse for a short run.
//! `/proc/PID/task/TID/schedstat` holds nanoseconds, but per thread: `/proc/PID/schedstat`
//! alone is the main thread only, which in a tokio server is nearly idle. So the precise figure
//! is the sum over the live threads, and the tick figure is the check: when it exceeds the sum
//! by more than its own rounding (threads that exited during the run took their time with
//! them), the ticks are used.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::oneshot;

/// utime + stime (fields 14 and 15) in clock ticks from the text of `/proc/PID/stat`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces or ')'; the fields that
    // follow start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After ')' come field 3 (state) onwards: utime is field 14, the 12th of these.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Nanoseconds on CPU: the first field of a `schedstat` file.
pub fn parse_schedstat_ns(s: &str) -> Option<u64> {
    s.split_ascii_whitespace().next()?.parse().ok()
}

/// `VmRSS` in KiB from the text of `/proc/PID/status`.
pub fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Clock ticks per second for `/proc/PID/stat` (`sysconf(_SC_CLK_TCK)`).
pub fn clock_ticks_per_sec() -> u64 {
    rustix::param::clock_ticks_per_second()
}

/// One reading of a process's CPU time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuReading {
    /// Sum of the live threads' schedstat, ns.
    pub threads_ns: Option<u64>,
    /// utime + stime, ticks.
    pub ticks: Option<u64>,
}

/// Reads the CPU time of `pid` (None when the process is gone).
pub fn cpu_reading(pid: u32) -> Option<CpuReading> {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| parse_stat_ticks(&s));
    let mut threads_ns = None;
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        let mut sum = 0u64;
        let mut any = false;
        for entry in dir.flatten() {
            let path = entry.path().join("schedstat");
            if let Some(ns) = std::fs::read_to_string(path)
                .ok()
                .and_then(|s| parse_schedstat_ns(&s))
            {
                sum += ns;
                any = true;
            }
        }
        threads_ns = any.then_some(sum);
    }
    if ticks.is_none() && threads_ns.is_none() {
        return None;
    }
    Some(CpuReading { threads_ns, ticks })
}

/// CPU time spent between two readings, in milliseconds (see the module doc for the choice).
pub fn cpu_ms_between(before: CpuReading, after: CpuReading, ticks_per_sec: u64) -> Option<f64> {
    let tick_ms = 1000.0 / ticks_per_sec.max(1) as f64;
    let by_ticks = match (before.ticks, after.ticks) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 * tick_ms),
        _ => None,
    };
    let by_threads = match (before.threads_ns, after.threads_ns) {
        // A thread that exited makes the sum go down; the ticks then decide.
        (Some(b), Some(a)) if a >= b => Some((a - b) as f64 / 1e6),
        _ => None,
    };
    match (by_threads, by_ticks) {
        // Each tick reading rounds down, so the tick delta may be one tick short or over.
        (Some(t), Some(k)) if k > t + 2.0 * tick_ms => Some(k),
        (Some(t), _) => Some(t),
        (None, k) => k,
    }
}

/// Resident set size of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| parse_vm_rss_kib(&s))
}

/// RSS over a run, KiB: the first sample, the highest, the last.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RssStats {
    pub first_kib: u64,
    pub peak_kib: u64,
    pub last_kib: u64,
    pub samples: u32,
}

impl RssStats {
    fn add(&mut self, kib: u64) {
        if self.samples == 0 {
            self.first_kib = kib;
        }
        self.peak_kib = self.peak_kib.max(kib);
        self.last_kib = kib;
        self.samples += 1;
    }
}

/// Samples the RSS of some processes every `every` until stopped.
pub struct RssSampler {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<BTreeMap<String, RssStats>>,
}

/// A sampler stops by itself after this long, whatever happens to its owner.
const MAX_SAMPLING: Duration = Duration::from_secs(4 * 3600);

impl RssSampler {
    /// Takes a first sample at once, then one every `every`.
    pub fn start(pids: Vec<(String, u32)>, every: Duration) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut out: BTreeMap<String, RssStats> = BTreeMap::new();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let end = tokio::time::Instant::now() + MAX_SAMPLING;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut stopped => break,
                    _ = tokio::time::sleep_until(end) => break,
                }
                for (name, pid) in &pids {
                    if let Some(kib) = rss_kib(*pid) {
                        out.entry(name.clone()).or_default().add(kib);
                    }
                }
            }
            // One last sample, so `last` is the state at the end of the run.
            for (name, pid) in &pids {
                if let Some(kib) = rss_kib(*pid) {
                    out.entry(name.clone()).or_default().add(kib);
                }
            }
            out
        });
        Self { stop, task }
    }

    pub async fn finish(self) -> BTreeMap<String, RssStats> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (sluice (x) y) S 1 4242 4242 0 -1 4194560 2870 0 0 0 \
                        157 43 0 0 20 0 6 0 1234567 123456789 2345 18446744073709551615";

    #[test]
    fn stat_ticks_after_a_tricky_command_name() {
        assert_eq!(parse_stat_ticks(STAT), Some(200));
        assert_eq!(parse_stat_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn schedstat_and_status() {
        assert_eq!(
            parse_schedstat_ns("1234567890 98765 4321\n"),
            Some(1_234_567_890)
        );
        let status = "Name:\tsluice\nVmPeak:\t  100 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss_kib(status), Some(12345));
        assert_eq!(parse_vm_rss_kib("Name:\tzombie\n"), None);
    }

    #[test]
    fn cpu_prefers_threads_unless_ticks_show_more() {
        let r = |ns, t| CpuReading {
            threads_ns: Some(ns),
            ticks: Some(t),
        };
        // 15.5 ms by schedstat, one tick (10 ms) by the ticks: schedstat wins.
        assert_eq!(
            cpu_ms_between(r(1_000_000, 5), r(16_500_000, 6), 100),
            Some(15.5)
        );
        // A thread that burned 100 ms exited: the sum fell, the ticks rose.
        assert_eq!(
            cpu_ms_between(r(50_000_000, 5), r(20_000_000, 15), 100),
            Some(100.0)
        );
        // The sum rose a little, but the ticks much more: threads exited.
        assert_eq!(cpu_ms_between(r(0, 0), r(1_000_000, 10), 100), Some(100.0));
        let only_ticks = |t| CpuReading {
            threads_ns: None,
            ticks: Some(t),
        };
        assert_eq!(
            cpu_ms_between(only_ticks(1), only_ticks(4), 100),
            Some(30.0)
        );
    }

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(rss_kib(pid).is_some_and(|k| k > 0));
        let r = cpu_reading(pid).expect("own /proc entry");
        assert!(r.ticks.is_some());
        assert!(clock_ticks_per_sec() > 0);
    }
}

//! What the machine lets Sluice use: the memory it may take (its cgroup's limit, else physical
//! memory), from which the relay's default bound is derived, and the open-file limit, raised to
//! the hard limit at start so that thousands of streams (two sockets each) fit.

use std::io;

/// The relay's default bound is this fraction of the memory Sluice may use...
pub const RELAY_SHARE_DIVISOR: u64 = 8;
/// ...but no more than this (about 150,000 finished 100-token answers)...
pub const RELAY_DEFAULT_MAX_BYTES: u64 = 256 << 20;
/// ...and no less than this.
pub const RELAY_DEFAULT_MIN_BYTES: u64 = 16 << 20;

/// The memory Sluice may use, and where that figure came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLimit {
    pub bytes: u64,
    pub source: &'static str,
}

/// The cgroup's memory limit when one is set, else physical memory; `None` when neither can be
/// read (not Linux, no /proc).
pub fn memory_limit() -> Option<MemoryLimit> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    // The process's own group (a container sees its own as `/`), then the hierarchy's root.
    let groups = read("/proc/self/cgroup").unwrap_or_default();
    let candidates = [
        (cgroup_path(&groups, "0::"), "/sys/fs/cgroup", "memory.max"),
        (Some(String::new()), "/sys/fs/cgroup", "memory.max"),
        (
            cgroup_path(&groups, ":memory:"),
            "/sys/fs/cgroup/memory",
            "memory.limit_in_bytes",
        ),
        (
            Some(String::new()),
            "/sys/fs/cgroup/memory",
            "memory.limit_in_bytes",
        ),
    ];
    for (group, root, file) in candidates {
        let Some(group) = group else { continue };
        if let Some(bytes) = read(&format!("{root}{group}/{file}")).and_then(|t| parse_limit(&t)) {
            return Some(MemoryLimit {
                bytes,
                source: if file == "memory.max" {
                    "cgroup memory.max"
                } else {
                    "cgroup memory.limit_in_bytes"
                },
            });
        }
    }
    read("/proc/meminfo")
        .and_then(|t| parse_meminfo_total(&t))
        .map(|bytes| MemoryLimit {
            bytes,
            source: "physical memory",
        })
}

/// The relay bound when none is configured: an eighth of `memory_bytes` (what Sluice may use,
/// see [`memory_limit`]), within [`RELAY_DEFAULT_MIN_BYTES`]..=[`RELAY_DEFAULT_MAX_BYTES`].
pub fn default_relay_bytes(memory_bytes: Option<u64>) -> u64 {
    memory_bytes.map_or(RELAY_DEFAULT_MAX_BYTES, |b| {
        (b / RELAY_SHARE_DIVISOR).clamp(RELAY_DEFAULT_MIN_BYTES, RELAY_DEFAULT_MAX_BYTES)
    })
}

/// The relay's memory bound: the configured one (`relay_max_total_bytes`), else
/// [`default_relay_bytes`] of the host's memory. Pure, so that the configuration stays so: the
/// caller at start probes the host ([`memory_limit`]) and hands its figure in.
pub fn relay_bound(explicit: Option<usize>, host_memory: Option<u64>) -> usize {
    explicit
        .unwrap_or_else(|| usize::try_from(default_relay_bytes(host_memory)).unwrap_or(usize::MAX))
}

/// The path of the process's group in `/proc/self/cgroup`: the cgroup v2 line (`0::/path`,
/// `marker` `0::`) or the v1 memory controller's (`4:memory:/path`, `marker` `:memory:`).
fn cgroup_path(text: &str, marker: &str) -> Option<String> {
    text.lines()
        .find_map(|l| {
            if marker == "0::" {
                l.strip_prefix(marker)
            } else {
                l.find(marker).map(|at| &l[at + marker.len()..])
            }
        })
        .map(|p| p.trim().trim_end_matches('/').to_owned())
}

/// A cgroup limit file: a byte count, or `max` (none). v1 writes "none" as a huge number.
fn parse_limit(text: &str) -> Option<u64> {
    let t = text.trim();
    let n: u64 = t.parse().ok()?;
    (n > 0 && n < 1 << 60).then_some(n)
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
fn parse_meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line
        .trim_start_matches("MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The soft open-file limit now.
pub fn open_files_soft() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

/// Descriptors kept out of the caps' reach, at least: stdio, the listeners (Sluice's and the
/// demo's), the runtime's epoll and wake-up descriptors, Redis connections, files the process
/// opens. A sixteenth of the limit when that is more.
pub const RESERVED_DESCRIPTORS_MIN: u64 = 32;

/// Descriptors one running stream holds: the client's socket and the upstream socket, plus,
/// with the built-in demo model (an upstream served inside this process over loopback), the
/// demo server's end of that connection.
pub fn descriptors_per_stream(demo: bool) -> u64 {
    if demo {
        3
    } else {
        2
    }
}

/// The default caps derived from the open-file limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultCaps {
    pub max_connections: usize,
    pub max_streams: usize,
}

/// Caps that meet their limits before the descriptors run out, so that a flood meets a clean
/// refusal (503 `too_many_streams`, or a connection closed at once) rather than `accept` or an
/// upstream connect failing with "Too many open files":
///
/// - `max_streams` streams of `per_stream` descriptors each, plus
/// - `max_connections - max_streams` connections that are not streams (1 descriptor each: a
///   `/healthz`, a refused request, an idle keep-alive), so that a full house of streams still
///   leaves room to answer a health check,
///
/// fit in the limit less [`RESERVED_DESCRIPTORS_MIN`] (or a sixteenth). A stream that lost its
/// client (the grace period) holds fewer than `per_stream`, so the sum is an upper bound.
pub fn default_caps(open_files: u64, per_stream: u64) -> DefaultCaps {
    let per_stream = per_stream.max(1);
    let reserve = (open_files / 16).max(RESERVED_DESCRIPTORS_MIN);
    let usable = open_files.saturating_sub(reserve);
    let spare = (usable / 8).max(4).min(usable);
    let streams = ((usable - spare) / per_stream).max(1);
    let to_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    DefaultCaps {
        max_connections: to_usize(streams + spare),
        max_streams: to_usize(streams),
    }
}

/// The open-file limit before and after [`raise_open_files`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimit {
    pub soft_before: u64,
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft open-file limit to the hard limit: a stream holds two or three sockets, and the
/// usual soft default (1024) would refuse connections at about 500 streams.
pub fn raise_open_files() -> io::Result<FileLimit> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let cur = getrlimit(Resource::Nofile);
    let soft_before = cur.current.unwrap_or(u64::MAX);
    let hard = cur.maximum.unwrap_or(u64::MAX);
    if cur.current == cur.maximum {
        return Ok(FileLimit {
            soft_before,
            soft: soft_before,
            hard,
        });
    }
    let mut raised = cur;
    raised.current = cur.maximum;
    setrlimit(Resource::Nofile, raised).map_err(io::Error::from)?;
    Ok(FileLimit {
        soft_before,
        soft: hard,
        hard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_and_meminfo_files() {
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("1073741824\n"), Some(1 << 30));
        assert_eq!(
            parse_limit("9223372036854771712\n"),
            None,
            "v1's 'no limit'"
        );
        assert_eq!(
            parse_meminfo_total("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            Some(24_576_000 * 1024)
        );
        assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);
        let groups = "4:memory:/process_api/9467\n1:cpu:/\n0::/system.slice/sluice.service\n";
        assert_eq!(
            cgroup_path(groups, "0::").as_deref(),
            Some("/system.slice/sluice.service")
        );
        assert_eq!(
            cgroup_path(groups, ":memory:").as_deref(),
            Some("/process_api/9467")
        );
        assert_eq!(cgroup_path("0::/\n", "0::").as_deref(), Some(""));
        assert_eq!(cgroup_path("1:cpu:/x\n", ":memory:"), None);
    }

    #[test]
    fn default_bound_is_an_eighth_within_limits() {
        let gib = |n: u64| Some(n << 30);
        assert_eq!(default_relay_bytes(gib(1)), 128 << 20);
        assert_eq!(default_relay_bytes(gib(24)), 256 << 20);
        assert_eq!(default_relay_bytes(Some(64 << 20)), 16 << 20);
        assert_eq!(default_relay_bytes(None), 256 << 20);
    }

    #[test]
    fn a_configured_relay_bound_wins_over_the_host() {
        assert_eq!(relay_bound(Some(1000), Some(1 << 30)), 1000);
        assert_eq!(relay_bound(Some(1000), None), 1000);
        assert_eq!(relay_bound(None, Some(1 << 30)), 128 << 20);
        assert_eq!(relay_bound(None, None), 256 << 20);
    }

    #[test]
    fn default_caps_fit_in_the_descriptors_with_room_for_a_health_check() {
        for limit in [64u64, 100, 256, 1024, 20_000, 1 << 20] {
            for demo in [true, false] {
                let per = descriptors_per_stream(demo);
                let c = default_caps(limit, per);
                let streams = c.max_streams as u64;
                let others = (c.max_connections - c.max_streams) as u64;
                assert!(streams >= 1 && others >= 4, "{limit} {demo}: {c:?}");
                assert!(
                    streams * per + others + RESERVED_DESCRIPTORS_MIN <= limit,
                    "{limit} {demo}: {c:?}"
                );
            }
        }
        assert_eq!(
            default_caps(64, 3),
            DefaultCaps {
                max_connections: 13,
                max_streams: 9
            }
        );
        // The old default (7/8 of the limit as connections, as many streams) ran out of
        // descriptors at a third of it with the demo: now most of the limit goes to streams.
        let c = default_caps(20_000, 3);
        assert!(c.max_streams > 5_000 && c.max_streams * 3 < 20_000, "{c:?}");
    }

    #[test]
    fn this_machine_has_a_memory_figure_and_a_file_limit() {
        let m = memory_limit().expect("Linux has /proc/meminfo");
        assert!(m.bytes > 64 << 20, "{m:?}");
        let f = raise_open_files().expect("raising to the hard limit is allowed");
        assert_eq!(f.soft, f.hard);
        assert!(f.soft >= f.soft_before);
    }
}

//! Process and machine accounting from `/proc` (Linux only).

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// Environment variable: CPUs (a `taskset -c` list) for the server process a benchmark
/// starts (the relay, the echo server). With the benchmark itself started under
/// `taskset -c` on the other CPUs, server and load generator no longer share cores,
/// and the server's own ceiling shows. Unset: no pinning.
pub const SERVER_CPUS_ENV: &str = "NOOK_BENCH_SERVER_CPUS";

/// The command that runs `bin`, under `taskset -c $NOOK_BENCH_SERVER_CPUS` if that is
/// set (taskset execs `bin`, so the child's pid is the server's).
pub fn server_command(bin: &Path) -> Command {
    match std::env::var(SERVER_CPUS_ENV) {
        Ok(cpus) if !cpus.trim().is_empty() => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpus.trim()).arg(bin);
            c
        }
        _ => Command::new(bin),
    }
}

/// Clock ticks per second of `/proc/*/stat` times (`getconf CLK_TCK`, 100 if unknown).
pub fn clk_tck() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

fn stat_cpu_s(path: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3 of stat(5), so utime (14) and stime (15) are at 11 and 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clk_tck())
}

/// CPU seconds (user + system, all threads) used by process `pid` so far.
pub fn process_cpu_s(pid: u32) -> Option<f64> {
    stat_cpu_s(&format!("/proc/{pid}/stat"))
}

/// CPU seconds used by this process so far.
pub fn self_cpu_s() -> Option<f64> {
    stat_cpu_s("/proc/self/stat")
}

/// Non-idle CPU seconds of the whole machine (all cores) since boot.
pub fn machine_busy_s() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        return None;
    }
    let total: f64 = v.iter().sum();
    Some((total - v[3] - v[4]) / clk_tck())
}

/// Resident set size of `pid` in KiB (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Number of threads of `pid`.
pub fn threads(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Bytes under `dir`: (sum of file lengths, sum of allocated blocks).
pub fn dir_size(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut apparent = 0;
    let mut allocated = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                apparent += meta.len();
                allocated += meta.blocks() * 512;
            }
        }
    }
    (apparent, allocated)
}

/// A snapshot of the CPU counters a run is judged by.
#[derive(Debug, Clone, Copy)]
pub struct CpuSnapshot {
    pub server: Option<f64>,
    pub machine: Option<f64>,
    pub own: Option<f64>,
}

impl CpuSnapshot {
    pub fn take(server_pid: Option<u32>) -> CpuSnapshot {
        CpuSnapshot {
            server: server_pid.and_then(process_cpu_s),
            machine: machine_busy_s(),
            own: self_cpu_s(),
        }
    }
}

/// CPU used between two snapshots.
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    /// CPU seconds of the server process (relay or echo server).
    pub server_s: Option<f64>,
    /// CPU seconds of this load generator.
    pub client_s: Option<f64>,
    /// CPU seconds of everything else on the machine (other builds...): near 0 means
    /// an undisturbed run.
    pub foreign_s: Option<f64>,
}

impl CpuUse {
    pub fn between(a: &CpuSnapshot, b: &CpuSnapshot) -> CpuUse {
        let d = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (Some(x), Some(y)) if y >= x => Some(y - x),
            _ => None,
        };
        let server_s = d(a.server, b.server);
        let client_s = d(a.own, b.own);
        let foreign_s = d(a.machine, b.machine)
            .map(|m| (m - server_s.unwrap_or(0.0) - client_s.unwrap_or(0.0)).max(0.0));
        CpuUse {
            server_s,
            client_s,
            foreign_s,
        }
    }
}

/// Waits (at most `max_wait`) until the machine's other processes use at most `cores`
/// of CPU, sampled over one second, as `../shared/peers/common.sh` `quiet_gate` does.
/// Returns the last sample (cores busy) so a run can record how quiet it started.
pub fn quiet_gate(cores: f64, max_wait: std::time::Duration) -> Option<f64> {
    let started = std::time::Instant::now();
    let mut warned = false;
    loop {
        let b0 = machine_busy_s()?;
        std::thread::sleep(std::time::Duration::from_secs(1));
        let b1 = machine_busy_s()?;
        let used = b1 - b0;
        if used <= cores {
            return Some(used);
        }
        if started.elapsed() >= max_wait {
            eprintln!(
                "machine still busy ({used:.2} cores used by others); measuring anyway (see the foreign column)"
            );
            return Some(used);
        }
        if !warned {
            eprintln!(
                "machine busy ({used:.2} cores used by others); waiting up to {} s",
                max_wait.as_secs()
            );
            warned = true;
        }
        std::thread::sleep(std::time::Duration::from_secs(4));
    }
}

/// The largest files under `dir` (relative path, bytes), biggest first, and how many
/// files there are in all.
pub fn largest_files(dir: &Path, n: usize) -> (Vec<(String, u64)>, usize) {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                let rel = e
                    .path()
                    .strip_prefix(dir)
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                files.push((rel, meta.len()));
            }
        }
    }
    let count = files.len();
    files.sort_by_key(|f| std::cmp::Reverse(f.1));
    files.truncate(n);
    (files, count)
}

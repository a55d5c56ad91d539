//! What a server process spent, from Linux's `/proc`: CPU time
//! (`/proc/PID/stat`), bytes it made the storage layer write
//! (`/proc/PID/io` `write_bytes`) and its peak resident set (`VmHWM`).
//! Elsewhere, or without permission, these are simply not reported.

use std::path::Path;

/// A reading at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// User plus system CPU seconds of the server.
    pub cpu_seconds: f64,
    /// Bytes written to storage by the server and the named processes.
    pub write_bytes: u64,
}

/// Clock ticks per second of `/proc/PID/stat` times; 100 on every Linux
/// this runs on (CONFIG_HZ does not change USER_HZ).
const TICKS_PER_SECOND: f64 = 100.0;

/// Reads the server `pid` and sums disk writes of processes named `name`.
pub fn sample(pid: Option<u32>, name: Option<&str>) -> Option<Sample> {
    let pid = pid?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields follow its closing paren.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let mut write_bytes = io_write_bytes(pid).unwrap_or(0);
    if let Some(name) = name {
        write_bytes += named_write_bytes(name, pid);
    }
    Some(Sample {
        cpu_seconds: (utime + stime) / TICKS_PER_SECOND,
        write_bytes,
    })
}

fn io_write_bytes(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

fn named_write_bytes(name: &str, except: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != except)
        .filter(|&pid| {
            std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("comm"))
                .is_ok_and(|comm| comm.trim() == name)
        })
        .filter_map(io_write_bytes)
        .sum()
}

/// The process's peak resident set size in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    status_kb(pid, "VmHWM:")
}

/// The process's resident set size now, in bytes.
pub fn rss(pid: u32) -> Option<u64> {
    status_kb(pid, "VmRSS:")
}

/// A `kB` field of `/proc/PID/status`, in bytes.
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

//! What the benches read of a process in `/proc`: resident memory and CPU
//! time, of a process with its children (nginx's workers) or of one thread
//! of the bench itself (its backend).

/// The children of `pid`'s main thread (nginx's workers), as pids.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .collect()
}

/// The resident memory of `pid` and its children (nginx's workers), in KiB.
pub fn rss_tree_kib(pid: u32) -> Option<u64> {
    let own = rss_kib(pid)?;
    Some(own + children(pid).into_iter().filter_map(rss_kib).sum::<u64>())
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// utime + stime of a `/proc/…/stat` file, in clock ticks: for a process
/// all its threads, for a `task/TID/stat` that thread alone.
fn stat_ticks(path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name is in parentheses and may hold spaces: count the
    // fields after its closing one (field 3, the state, comes first).
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The CPU time `pid` and its children (nginx's workers) have used so far,
/// in microseconds (clock-tick resolution, 10 ms on most systems).
pub fn cpu_tree_us(pid: u32) -> Option<f64> {
    let own = stat_ticks(&format!("/proc/{pid}/stat"))?;
    let workers: u64 = children(pid)
        .into_iter()
        .filter_map(|c| stat_ticks(&format!("/proc/{c}/stat")))
        .sum();
    Some(ticks_to_us(own + workers))
}

/// The CPU time thread `tid` of this process has used so far, in
/// microseconds (clock-tick resolution).
pub fn cpu_own_thread_us(tid: i64) -> Option<f64> {
    stat_ticks(&format!("/proc/self/task/{tid}/stat")).map(ticks_to_us)
}

/// This thread's id, as `/proc/self/task/` names it.
pub fn current_tid() -> i64 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) }
}

fn ticks_to_us(ticks: u64) -> f64 {
    // SAFETY: sysconf reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    ticks as f64 * 1e6 / per_second as f64
}

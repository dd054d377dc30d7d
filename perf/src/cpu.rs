//! CPU time of the generator itself and of the server under test.
//!
//! A throughput figure means little without its cost: the report divides the server's CPU
//! time over the measured window by the messages it delivered (CPU microseconds per
//! message), and shows the generator's own CPU so a reader can tell whether the generator,
//! not the server, was the bottleneck. The generator's time comes from `getrusage`; the
//! server's from `/proc/PID/stat` (user + system ticks of all its threads).

use std::io;
use std::time::Duration;

/// User + system CPU time of this process, all threads.
pub fn self_cpu() -> io::Result<Duration> {
    // SAFETY: `getrusage` only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a properly sized, writable rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    Ok(tv(ru.ru_utime) + tv(ru.ru_stime))
}

/// User + system CPU time of process `pid` (Linux `/proc`).
pub fn process_cpu(pid: u32) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let st = parse_stat(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected /proc/{pid}/stat"),
        )
    })?;
    Ok(ticks_to_duration(st.utime + st.stime))
}

/// Whether process `pid` exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => parse_stat(&s).is_some_and(|st| !matches!(st.state, 'Z' | 'X' | 'x')),
        Err(_) => false,
    }
}

/// The fields of `/proc/PID/stat` this module reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub state: char,
    pub utime: u64,
    pub stime: u64,
}

/// Parses `/proc/PID/stat`. The command name (field 2) is in parentheses and may itself
/// contain spaces and parentheses, so fields are counted from the *last* `)`.
pub fn parse_stat(s: &str) -> Option<ProcStat> {
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 (index 0 here), utime field 14, stime field 15.
    Some(ProcStat {
        state: f.first()?.chars().next()?,
        utime: f.get(11)?.parse().ok()?,
        stime: f.get(12)?.parse().ok()?,
    })
}

fn ticks_to_duration(ticks: u64) -> Duration {
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / hz)
}

/// Raises this process's open-file limit to its hard limit (thousands of sockets), and
/// returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur as u64;
            }
        }
        lim.rlim_cur as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_name() {
        let s = "4242 (my (odd) srv) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 \
                 1234 1000 10 18446744073709551615";
        assert_eq!(
            parse_stat(s),
            Some(ProcStat {
                state: 'S',
                utime: 250,
                stime: 75
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process() {
        let me = std::process::id();
        assert!(process_alive(me));
        assert!(process_cpu(me).is_ok());
        assert!(self_cpu().is_ok());
    }
}

//! CPU time and resident memory of another process, read from Linux's
//! `/proc`: what the benchmarks charge to the server during each phase.
//!
//! CPU time is user plus system time, for the whole process and per thread
//! name (threads of one name, such as a pool's, are summed). Threads that
//! have exited are still in the process total but no longer in the per-name
//! view. Off Linux every read is an error.
//!
//! Times are in nanoseconds where the kernel gives them: the process's CPU
//! clock (`clock_getcpuclockid`) for the total, each thread's
//! `/proc/.../schedstat` (the scheduler's own run time) per name; else in
//! clock ticks (10 ms) from `stat`. A bench that charges a few seconds of load
//! at 10 % busy to a server cannot afford an error of a tick at each end.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use nix::time::ClockId;
use nix::unistd::Pid;

/// CPU time used so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// The whole process, threads that have exited included.
    pub total: Duration,
    /// Live threads by name (`comm`, at most 15 bytes), summed per name.
    pub by_thread: BTreeMap<String, Duration>,
}

impl CpuTimes {
    /// CPU time used between `earlier` and `self`; a thread name missing
    /// from `earlier` counts from zero.
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        let by_thread = self
            .by_thread
            .iter()
            .map(|(name, time)| {
                let before = earlier.by_thread.get(name).copied().unwrap_or_default();
                (name.clone(), time.saturating_sub(before))
            })
            .collect();
        Self {
            total: self.total.saturating_sub(earlier.total),
            by_thread,
        }
    }

    /// CPU time of the live threads whose name starts with `prefix`.
    #[must_use]
    pub fn threads_named(&self, prefix: &str) -> Duration {
        self.by_thread
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, time)| *time)
            .sum()
    }
}

/// The CPU time process `pid` has used so far.
///
/// # Errors
/// When `/proc/PID` cannot be read (the process is gone, or not Linux).
pub fn cpu_times(pid: u32) -> io::Result<CpuTimes> {
    let dir = format!("/proc/{pid}");
    let total = match process_clock(pid) {
        Some(total) => total,
        None => stat_cpu(&std::fs::read_to_string(format!("{dir}/stat"))?)?,
    };
    let mut by_thread = BTreeMap::new();
    for entry in std::fs::read_dir(format!("{dir}/task"))? {
        let task = entry?.path();
        // A thread may exit between the listing and the read: skip it.
        let Ok(name) = std::fs::read_to_string(task.join("comm")) else {
            continue;
        };
        let time = match std::fs::read_to_string(task.join("schedstat"))
            .ok()
            .and_then(|text| schedstat_run_time(&text))
        {
            Some(time) => time,
            None => match std::fs::read_to_string(task.join("stat")) {
                Ok(stat) => stat_cpu(&stat)?,
                Err(_) => continue,
            },
        };
        *by_thread
            .entry(name.trim_end().to_owned())
            .or_insert(Duration::ZERO) += time;
    }
    Ok(CpuTimes { total, by_thread })
}

/// The process's CPU clock (`clock_getcpuclockid`): every thread's run time, those that
/// have exited included, to the nanosecond. None where it cannot be read.
fn process_clock(pid: u32) -> Option<Duration> {
    let pid = i32::try_from(pid).ok()?;
    let clock = ClockId::pid_cpu_clock_id(Pid::from_raw(pid)).ok()?;
    let time = clock.now().ok()?;
    Some(Duration::from(time))
}

/// The run time in the first field of a `/proc/.../schedstat` line (nanoseconds); none
/// when the kernel keeps no such statistics (the file is missing, or all zeros).
fn schedstat_run_time(text: &str) -> Option<Duration> {
    let nanos: u64 = text.split_whitespace().next()?.parse().ok()?;
    (nanos > 0).then(|| Duration::from_nanos(nanos))
}

/// The CPU time process `pid` and its children have used so far: its own, that of its
/// children that have exited and it has waited for, and that of its live children (not
/// their own children). This is what a PostgreSQL server costs: the postmaster and one
/// backend per connection.
///
/// # Errors
/// When `/proc/PID` cannot be read (the process is gone, or not Linux).
pub fn cpu_with_children(pid: u32) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let mut total = stat_cpu(&stat)? + stat_children_cpu(&stat)?;
    for entry in std::fs::read_dir("/proc")? {
        let Some(child) = entry?
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may exit between the listing and the read: skip it.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        if stat_parent(&stat)? == pid {
            total += stat_cpu(&stat)?;
        }
    }
    Ok(total)
}

/// CPU time of the whole machine so far, every CPU summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineCpu {
    /// Time spent running anything: user, nice, system, interrupts.
    pub busy: Duration,
    /// Time the hypervisor gave our virtual CPUs to someone else.
    pub steal: Duration,
    /// Everything, idle time included.
    pub total: Duration,
}

impl MachineCpu {
    /// The CPU time used between `earlier` and `self`.
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            busy: self.busy.saturating_sub(earlier.busy),
            steal: self.steal.saturating_sub(earlier.steal),
            total: self.total.saturating_sub(earlier.total),
        }
    }
}

/// The machine's CPU time so far, from the first line of `/proc/stat`.
///
/// # Errors
/// When `/proc/stat` cannot be read or parsed.
pub fn machine_cpu() -> io::Result<MachineCpu> {
    machine_cpu_of(&std::fs::read_to_string("/proc/stat")?)
}

fn machine_cpu_of(stat: &str) -> io::Result<MachineCpu> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/stat");
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(bad)?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let [user, nice, system, idle, iowait, irq, softirq, steal, ..] = ticks[..] else {
        return Err(bad());
    };
    let time = |ticks: u64| Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second());
    Ok(MachineCpu {
        busy: time(user + nice + system + irq + softirq),
        steal: time(steal),
        total: time(user + nice + system + idle + iowait + irq + softirq + steal),
    })
}

/// Resident memory (`VmRSS`) of process `pid`, in bytes.
///
/// # Errors
/// When `/proc/PID/status` cannot be read or has no `VmRSS` line.
pub fn resident_bytes(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status"))?;
    vm_rss(&status).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS line"))
}

fn vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    // "VmRSS:     12345 kB"
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// utime + stime of one `/proc/.../stat` line.
fn stat_cpu(stat: &str) -> io::Result<Duration> {
    stat_ticks(stat, [14, 15])
}

/// cutime + cstime (children waited for) of one `/proc/.../stat` line.
fn stat_children_cpu(stat: &str) -> io::Result<Duration> {
    stat_ticks(stat, [16, 17])
}

/// The parent's process id in one `/proc/.../stat` line.
fn stat_parent(stat: &str) -> io::Result<u32> {
    stat_field(stat, 4)
}

/// The sum of two clock-tick fields of one `/proc/.../stat` line, as a duration.
fn stat_ticks(stat: &str, fields: [usize; 2]) -> io::Result<Duration> {
    let ticks = stat_field::<u64>(stat, fields[0])? + stat_field::<u64>(stat, fields[1])?;
    Ok(Duration::from_secs_f64(
        ticks as f64 / clock_ticks_per_second(),
    ))
}

/// Field `field` (numbered as in proc(5), from 1) of one `/proc/.../stat` line; field 3 or
/// later.
fn stat_field<T: std::str::FromStr>(stat: &str, field: usize) -> io::Result<T> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected stat line: {stat}"),
        )
    };
    // The command name is in parentheses and may contain anything, spaces included.
    let after_name = &stat[stat.rfind(')').ok_or_else(bad)? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // The first field after the name is field 3.
    field
        .checked_sub(3)
        .and_then(|index| fields.get(index))
        .and_then(|f| f.parse().ok())
        .ok_or_else(bad)
}

/// `sysconf(_SC_CLK_TCK)`, read once with `getconf`; 100, the Linux value
/// on every common architecture, if that fails.
fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse::<f64>().ok())
            .filter(|ticks| *ticks > 0.0)
            .unwrap_or(100.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_are_read() {
        let ticks = clock_ticks_per_second();
        let line = "4242 (tokio (runtime) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1000 0 0";
        let cpu = stat_cpu(line).unwrap();
        assert_eq!(cpu, Duration::from_secs_f64(300.0 / ticks));
        assert!(stat_cpu("no parenthesis").is_err());
        assert!(stat_cpu("1 (short) S 1").is_err());
        assert_eq!(stat_parent(line).unwrap(), 1);
        assert_eq!(stat_children_cpu(line).unwrap(), Duration::ZERO);
        let waited = "7 (postgres) S 3 7 7 0 -1 0 0 0 0 0 1 2 30 12 20 0 1 0 5 0 0";
        assert_eq!(
            stat_children_cpu(waited).unwrap(),
            Duration::from_secs_f64(42.0 / ticks)
        );
        assert_eq!(stat_parent(waited).unwrap(), 3);
    }

    #[test]
    fn a_process_is_charged_for_the_children_it_waited_for() {
        let pid = std::process::id();
        // A child that burns some CPU time, then is waited for.
        let status = Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(status.success());
        let own = cpu_times(pid).unwrap().total;
        let with_children = cpu_with_children(pid).unwrap();
        assert!(with_children > own, "{with_children:?} <= {own:?}");
    }

    #[test]
    fn schedstat_gives_run_time_in_nanoseconds() {
        assert_eq!(
            schedstat_run_time("250428403 140639 64\n"),
            Some(Duration::from_nanos(250_428_403))
        );
        // Kernels without scheduler statistics: fall back to stat.
        assert_eq!(schedstat_run_time("0 0 1\n"), None);
        assert_eq!(schedstat_run_time(""), None);
        assert_eq!(schedstat_run_time("x 1 2"), None);
    }

    #[test]
    fn machine_cpu_sums_the_busy_columns() {
        let ticks = clock_ticks_per_second();
        let stat = "cpu  100 5 50 1000 7 3 2 11 0 0\ncpu0 50 2 25 500 3 1 1 5 0 0\n";
        let cpu = machine_cpu_of(stat).unwrap();
        assert_eq!(cpu.busy, Duration::from_secs_f64(160.0 / ticks));
        assert_eq!(cpu.steal, Duration::from_secs_f64(11.0 / ticks));
        assert_eq!(cpu.total, Duration::from_secs_f64(1178.0 / ticks));
        assert!(machine_cpu_of("cpu 1 2 3\n").is_err());
        assert!(machine_cpu().unwrap().total > Duration::ZERO);
    }

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t  1234 kB\nThreads:\t3\n";
        assert_eq!(vm_rss(status), Some(1234 * 1024));
        assert_eq!(vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_is_charged_for_the_cpu_it_burns() {
        // The kernel charges CPU time in clock ticks, the whole process and
        // each thread rounded on their own: a fixed burn may show nothing yet
        // for this thread although the total moved (or the total may move for
        // a thread that has since exited). So burn until both counters move,
        // under a deadline only a stuck machine reaches.
        let pid = std::process::id();
        let me = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
        let me = me.trim_end().to_owned();
        let before = cpu_times(pid).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let mut x = 0u64;
        let used = loop {
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            let used = cpu_times(pid).unwrap().since(&before);
            let mine = used.by_thread.get(&me).copied().unwrap_or_default();
            if (used.total > Duration::ZERO && mine > Duration::ZERO)
                || std::time::Instant::now() > deadline
            {
                break used;
            }
        };
        std::hint::black_box(x);
        assert!(
            used.total > Duration::ZERO,
            "no CPU time charged to the process in 120 s of spinning"
        );
        assert!(
            used.threads_named(&me) > Duration::ZERO,
            "no CPU time charged to the spinning thread {me:?}: {used:?}"
        );
        assert!(resident_bytes(pid).unwrap() > 0);
    }

    #[test]
    fn since_subtracts_per_thread_name() {
        let earlier = CpuTimes {
            total: Duration::from_millis(100),
            by_thread: BTreeMap::from([("worker".to_owned(), Duration::from_millis(60))]),
        };
        let later = CpuTimes {
            total: Duration::from_millis(250),
            by_thread: BTreeMap::from([
                ("worker".to_owned(), Duration::from_millis(100)),
                ("worker-2".to_owned(), Duration::from_millis(30)),
            ]),
        };
        let used = later.since(&earlier);
        assert_eq!(used.total, Duration::from_millis(150));
        assert_eq!(used.by_thread["worker"], Duration::from_millis(40));
        assert_eq!(used.threads_named("worker"), Duration::from_millis(70));
    }

    #[test]
    fn the_process_clock_counts_threads_that_have_exited() {
        let pid = std::process::id();
        let before = process_clock(pid).expect("this kernel has process CPU clocks");
        // A thread that burns 20 ms of CPU by its own clock (however long that takes on a
        // busy machine) and exits before the second reading.
        let burned = std::thread::spawn(|| {
            let own = || Duration::from(ClockId::CLOCK_THREAD_CPUTIME_ID.now().unwrap());
            let start = own();
            let mut x = 0u64;
            while own() - start < Duration::from_millis(20) {
                for _ in 0..10_000 {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
                }
            }
            own() - start
        })
        .join()
        .unwrap();
        let used = process_clock(pid).unwrap() - before;
        assert!(used >= burned, "{used:?} < {burned:?}");
        assert!(cpu_times(pid).unwrap().total >= before + used);
    }
}

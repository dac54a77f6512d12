//! What loadtest reads from `/proc`: the one parser of `/proc/<pid>/stat` (state, parent,
//! CPU time and start time, which the local fleet uses to recognise its own processes);
//! and, for the HTTP benchmarks, the CPU time of a process or of its whole tree, the busy
//! time of the machine, and resident memory (VmRSS and PSS). The parsers are pure
//! functions of the file's text; the readers return zero (or `None`) for a process that
//! is gone.

use std::collections::BTreeMap;

/// Clock ticks per second of `/proc` times (USER_HZ: 100 on Linux).
const TICKS: f64 = 100.0;

/// utime + stime of `pid` from `/proc/<pid>/stat`, in seconds (0 when unreadable).
pub fn process_cpu(pid: u32) -> f64 {
    read_stat(pid).map_or(0.0, |s| s.cpu_ticks as f64 / TICKS)
}

/// `pid` and all its descendants (nginx's master and workers, MLServer and its inference
/// workers), in CPU seconds.
pub fn tree_cpu(pid: u32) -> f64 {
    std::iter::once(pid)
        .chain(descendants(pid))
        .map(process_cpu)
        .sum()
}

/// The processes below `pid` (children, their children, ...), read from `/proc`.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(stat) = read_stat(child) {
                parents.push((child, stat.ppid));
            }
        }
    }
    descendants_in(pid, &parents)
}

/// The descendants of `root` among `(pid, ppid)` pairs, in ascending order.
pub fn descendants_in(root: u32, parents: &[(u32, u32)]) -> Vec<u32> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for &(pid, ppid) in parents {
        if pid != ppid {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).map_or(&[][..], Vec::as_slice) {
            if c != root && !found.contains(&c) {
                found.push(c);
                todo.push(c);
            }
        }
    }
    found.sort_unstable();
    found
}

/// The fields of a `/proc/<pid>/stat` line that loadtest reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Field 3: `R`, `S`, `D`, `Z` (zombie), ...
    pub state: char,
    /// Field 4.
    pub ppid: u32,
    /// utime + stime (fields 14 and 15), in clock ticks.
    pub cpu_ticks: u64,
    /// Field 22, in clock ticks since boot: with the PID, identifies a process for good
    /// (`None` when the line ends before it).
    pub start_time: Option<u64>,
}

/// The fields of a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses
/// and may itself contain spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(stat: &str) -> Option<Stat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); ppid is field 4, utime 14, stime 15, start time 22.
    let state = f.first()?.chars().next()?;
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let start_time = match f.get(19) {
        Some(s) => Some(s.parse().ok()?),
        None => None,
    };
    Some(Stat {
        state,
        ppid,
        cpu_ticks: utime + stime,
        start_time,
    })
}

/// `/proc/<pid>/stat` of `pid`, parsed (`None` when it is gone or unreadable).
pub fn read_stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Busy CPU seconds of the whole machine (all cores) from `/proc/stat`.
pub fn machine_busy() -> f64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| parse_machine_busy(&s))
        .map_or(0.0, |ticks| ticks as f64 / TICKS)
}

/// user + nice + system + irq + softirq + steal of the `cpu` line.
pub fn parse_machine_busy(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    Some(
        [0, 1, 2, 5, 6, 7]
            .iter()
            .map(|&i| v.get(i).copied().unwrap_or(0))
            .sum(),
    )
}

/// Resident memory of one process or a tree of them, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footprint {
    /// VmRSS: every page mapped in, shared ones (libraries) counted in each process.
    pub rss_kib: u64,
    /// PSS: shared pages divided among the processes sharing them, so that a tree's sum
    /// counts each page once.
    pub pss_kib: u64,
    /// How many processes the figures add up.
    pub processes: usize,
}

impl Footprint {
    /// `pid` alone (`None` when it is gone).
    pub fn of(pid: u32) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rollup =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        Some(Self {
            rss_kib: field_kib(&status, "VmRSS")?,
            pss_kib: field_kib(&rollup, "Pss").unwrap_or(0),
            processes: 1,
        })
    }

    /// `pid` and all its descendants, summed.
    pub fn of_tree(pid: u32) -> Self {
        std::iter::once(pid)
            .chain(descendants(pid))
            .filter_map(Self::of)
            .fold(Self::default(), |a, b| a.plus(b))
    }

    pub fn plus(self, other: Self) -> Self {
        Self {
            rss_kib: self.rss_kib + other.rss_kib,
            pss_kib: self.pss_kib + other.pss_kib,
            processes: self.processes + other.processes,
        }
    }

    /// The larger of each figure.
    pub fn max(self, other: Self) -> Self {
        Self {
            rss_kib: self.rss_kib.max(other.rss_kib),
            pss_kib: self.pss_kib.max(other.pss_kib),
            processes: self.processes.max(other.processes),
        }
    }

    pub fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }

    pub fn pss_mib(&self) -> f64 {
        self.pss_kib as f64 / 1024.0
    }
}

/// The value of a `Key:   123 kB` line (`/proc/<pid>/status`, `smaps_rollup`), in KiB.
pub fn field_kib(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if k.trim() != key {
            return None;
        }
        let mut parts = v.split_whitespace();
        let n: u64 = parts.next()?.parse().ok()?;
        match parts.next() {
            Some("kB") | None => Some(n),
            Some(_) => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_state_and_start_time() {
        let stat =
            "4242 (router) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 2 0 987654 1000 10";
        let s = parse_stat(stat).map(|s| (s.state, s.start_time.unwrap_or(0)));
        assert_eq!(s, Some(('S', 987654)));
    }

    proptest! {
        /// Command names with spaces and parentheses do not shift the fields.
        #[test]
        fn command_names_cannot_shift_fields(comm in "[ a-z()]{0,15}", start in any::<u64>()) {
            let stat = format!("7 ({comm}) R 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0 0");
            let s = parse_stat(&stat).map(|s| (s.state, s.start_time.unwrap_or(0)));
            prop_assert_eq!(s, Some(('R', start)));
        }
    }

    #[test]
    fn stat_lines() {
        let stat = "42 (a (b) c) S 7 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(
            parse_stat(stat).map(|s| (s.ppid, s.cpu_ticks)),
            Some((7, 300))
        );
        let machine = "cpu  10 1 5 1000 7 2 3 4 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n";
        assert_eq!(parse_machine_busy(machine), Some(10 + 1 + 5 + 2 + 3 + 4));
    }

    #[test]
    fn trees_take_grandchildren_and_nothing_else() {
        // 10 → 11 → 13, 10 → 12; 20 is unrelated; 1 is everyone's ancestor.
        let parents = [(10, 1), (11, 10), (12, 10), (13, 11), (20, 1), (1, 0)];
        assert_eq!(descendants_in(10, &parents), [11, 12, 13]);
        assert_eq!(descendants_in(13, &parents), Vec::<u32>::new());
        assert_eq!(descendants_in(1, &parents), [10, 11, 12, 13, 20]);
    }

    #[test]
    fn memory_fields() {
        let status = "Name:\tworker\nVmPeak:\t  900 kB\nVmRSS:\t   12345 kB\nRssAnon:\t 1 kB\n";
        assert_eq!(field_kib(status, "VmRSS"), Some(12_345));
        assert_eq!(field_kib(status, "VmSwap"), None);
        let rollup =
            "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:  20 kB\nPss:   7 kB\nPss_Anon: 3 kB\n";
        assert_eq!(field_kib(rollup, "Pss"), Some(7));
        assert_eq!(field_kib("VmRSS: 3 MB\n", "VmRSS"), None);
        let a = Footprint {
            rss_kib: 10,
            pss_kib: 4,
            processes: 1,
        };
        let b = Footprint {
            rss_kib: 5,
            pss_kib: 6,
            processes: 2,
        };
        assert_eq!(
            a.plus(b),
            Footprint {
                rss_kib: 15,
                pss_kib: 10,
                processes: 3
            }
        );
        assert_eq!(
            a.max(b),
            Footprint {
                rss_kib: 10,
                pss_kib: 6,
                processes: 2
            }
        );
    }

    #[test]
    fn this_process_has_a_footprint() {
        let me = Footprint::of(std::process::id()).expect("readable");
        assert!(me.rss_kib > 0 && me.processes == 1);
        assert!(Footprint::of_tree(std::process::id()).rss_kib >= me.rss_kib);
    }
}

//! CPU time of the processes on a call's path, read from `/proc/<pid>/stat`.

use std::collections::HashMap;
use std::fs;

/// Whose CPU a sample counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    /// The Tessera server.
    Server,
    Redis,
    /// Every PostgreSQL process except the client backends of other databases.
    Postgres,
    /// The bare proxy (its own process).
    Proxy,
    /// LiteLLM's proxy (its process and children), when the run includes it.
    LiteLlm,
    /// The provider simulator.
    Sim,
    /// This process: the load generator.
    Client,
}

impl Group {
    pub const ALL: [Group; 7] = [
        Group::Server,
        Group::Redis,
        Group::Postgres,
        Group::Proxy,
        Group::LiteLlm,
        Group::Sim,
        Group::Client,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Group::Server => "server",
            Group::Redis => "redis",
            Group::Postgres => "postgres",
            Group::Proxy => "proxy",
            Group::LiteLlm => "litellm",
            Group::Sim => "sim",
            Group::Client => "client",
        }
    }
}

/// CPU time of a process (all its threads, those that have ended too), in nanoseconds, as the
/// kernel accounts it to the nanosecond (its CPU-time clock, `clock_getcpuclockid`); `None`
/// once it is gone. `/proc/<pid>/stat`'s user and system times are in clock ticks (10 ms), too
/// coarse for the shorter runs: a bare proxy's run of 2,000 JSON calls is about 9 ticks.
pub fn cpu_ns(pid: u32) -> Option<u64> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: the call writes one clockid_t, to a valid place.
    if unsafe { libc::clock_getcpuclockid(pid, &mut clock) } != 0 {
        return None;
    }
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: the call writes one timespec, to a valid place.
    if unsafe { libc::clock_gettime(clock, &mut t) } != 0 {
        return None;
    }
    Some(u64::try_from(t.tv_sec).ok()? * 1_000_000_000 + u64::try_from(t.tv_nsec).ok()?)
}

fn read(pid: u32, what: &str) -> Option<String> {
    fs::read(format!("/proc/{pid}/{what}"))
        .ok()
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
}

fn all_pids() -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Pids whose command line starts with a program named `program` (its file name), and whose
/// first argument is `arg` when one is given.
pub fn find_program(program: &str, arg: Option<&str>) -> Vec<u32> {
    let me = std::process::id();
    all_pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let mut argv = raw.split(|b| *b == 0).map(String::from_utf8_lossy);
            let matches_program = argv
                .next()
                .is_some_and(|a0| a0.rsplit('/').next() == Some(program));
            matches_program && arg.is_none_or(|want| argv.next().as_deref() == Some(want))
        })
        .collect()
}

/// The processes whose parent is `pid`, and theirs, and so on.
pub fn children(pid: u32) -> Vec<u32> {
    let parent = |p: u32| -> Option<u32> {
        let stat = fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        let rest = &stat[stat.rfind(')')? + 1..];
        rest.split_whitespace().nth(1)?.parse().ok()
    };
    let pids = all_pids();
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for &c in &pids {
            if parent(c) == Some(p) && !out.contains(&c) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out
}

/// The database a PostgreSQL client backend serves, from its process title
/// (`postgres: 15/main: USER DATABASE HOST(PORT) STATE`); `None` for the postmaster and the
/// server's own background processes.
fn backend_database(title: &str) -> Option<String> {
    let tokens: Vec<&str> = title.split_whitespace().collect();
    let at = tokens
        .iter()
        .position(|t| (t.contains('(') && t.ends_with(')')) || *t == "[local]")?;
    (at >= 2).then(|| tokens[at - 1].to_string())
}

/// The processes whose CPU a run counts.
pub struct Watched {
    pub fixed: Vec<(Group, u32)>,
    /// Client backends of other databases are left out (other work on a shared PostgreSQL).
    pub database: String,
}

/// CPU time per process at one moment, in nanoseconds.
pub struct Sample(HashMap<(Group, u32), u64>);

impl Watched {
    pub fn sample(&self) -> Sample {
        let mut out = HashMap::new();
        for &(group, pid) in &self.fixed {
            if let Some(t) = cpu_ns(pid) {
                out.insert((group, pid), t);
            }
        }
        for pid in all_pids() {
            let group = match read(pid, "comm").as_deref().map(str::trim) {
                Some("redis-server") => Group::Redis,
                Some("postgres") => {
                    let title = read(pid, "cmdline").unwrap_or_default();
                    if backend_database(&title).is_some_and(|db| db != self.database) {
                        continue;
                    }
                    Group::Postgres
                }
                _ => continue,
            };
            if let Some(t) = cpu_ns(pid) {
                out.insert((group, pid), t);
            }
        }
        Sample(out)
    }
}

/// CPU time (nanoseconds) used by each group between two samples. A process that appeared in between counts
/// from zero; one that went away in between is lost (PostgreSQL keeps its backends, so this is
/// rare).
pub fn used(before: &Sample, after: &Sample) -> HashMap<Group, u64> {
    let mut out: HashMap<Group, u64> = Group::ALL.iter().map(|g| (*g, 0)).collect();
    for (key, t1) in &after.0 {
        let t0 = before.0.get(key).copied().unwrap_or(0);
        *out.entry(key.0).or_default() += t1.saturating_sub(t0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_titles_name_their_database() {
        assert_eq!(
            backend_database("postgres: 15/main: tessera_app tessera_bench 127.0.0.1(41234) idle"),
            Some("tessera_bench".into())
        );
        assert_eq!(
            backend_database("postgres: 15/main: tessera_app tessera [local] idle"),
            Some("tessera".into())
        );
        assert_eq!(backend_database("postgres: 15/main: walwriter"), None);
        assert_eq!(
            backend_database("/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main"),
            None
        );
    }

    #[test]
    fn a_process_cpu_time_grows_as_it_works() {
        let before = cpu_ns(std::process::id()).unwrap();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        assert!(cpu_ns(std::process::id()).unwrap() > before, "{x}");
        // Above the largest pid Linux hands out (2^22).
        assert!(cpu_ns((1 << 22) + 1).is_none());
    }
}

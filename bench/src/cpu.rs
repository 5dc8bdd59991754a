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

/// Clock ticks per second, the unit of `/proc/<pid>/stat` times.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// User plus system time of a process (all its threads), in clock ticks; `None` once it is gone.
pub fn ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: count fields after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of the line; field 3 (state) is the first after ')'.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
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

/// CPU ticks per process at one moment.
pub struct Sample(HashMap<(Group, u32), u64>);

impl Watched {
    pub fn sample(&self) -> Sample {
        let mut out = HashMap::new();
        for &(group, pid) in &self.fixed {
            if let Some(t) = ticks(pid) {
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
            if let Some(t) = ticks(pid) {
                out.insert((group, pid), t);
            }
        }
        Sample(out)
    }
}

/// Ticks used by each group between two samples. A process that appeared in between counts
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
    fn own_process_has_cpu_ticks() {
        assert!(ticks(std::process::id()).is_some());
    }
}

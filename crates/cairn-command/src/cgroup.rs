//! A cgroup (version 2) for each attempt, where cairn may make one.
//!
//! The subreaper and the attempt's key find what left the process group,
//! but not a process that cleared its environment before it detached. A
//! cgroup finds everything: the program is moved into the attempt's cgroup
//! between `fork` and `exec`, so every process it starts is born inside,
//! and none leaves without write access to the cgroup tree (which a command
//! run by root has: the fence does not hold against root). At the end of
//! the attempt, `cgroup.kill` kills all of them at once, forks in flight
//! included, and the reaper reaps those that became cairn's.
//!
//! cairn makes the attempt's cgroup under its own (the `0::` line of
//! `/proc/self/cgroup`, below the `cgroup2` mount), when it may write there:
//! as root on a host or in a container with a writable hierarchy, or under
//! a delegated systemd unit. Where it may not, [`AttemptGroup::make`] returns
//! `None` and the attempt is fenced as before (group, subreaper, key).

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// Where attempt cgroups are made: the directory of cairn's own cgroup and
/// its path as `/proc/PID/cgroup` names it.
struct Base {
    dir: PathBuf,
    path: String,
}

/// Finds cairn's own cgroup once and checks that a cgroup can be made and
/// removed below it.
fn base() -> Option<&'static Base> {
    static BASE: OnceLock<Option<Base>> = OnceLock::new();
    BASE.get_or_init(|| {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let path = own.lines().find_map(|line| line.strip_prefix("0::"))?.to_owned();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let mount = cgroup2_mount(&mountinfo)?;
        let dir = mount.join(path.trim_start_matches('/'));
        let probe = dir.join(format!("cairn-{}-probe", std::process::id()));
        std::fs::create_dir(&probe).ok()?;
        std::fs::remove_dir(&probe).ok()?;
        Some(Base { dir, path })
    })
    .as_ref()
}

/// Whether attempt cgroups can be made here.
pub(crate) fn available() -> bool {
    base().is_some()
}

/// The mount point of the whole `cgroup2` hierarchy, from
/// `/proc/self/mountinfo`: `ID PARENT MAJ:MIN ROOT POINT OPTIONS... - TYPE ...`.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let fs = after.split(' ').next()?;
        let mut fields = before.split(' ');
        let root = fields.nth(3)?;
        let point = fields.next()?;
        (fs == "cgroup2" && root == "/" && !point.contains('\\')).then(|| PathBuf::from(point))
    })
}

/// One attempt's cgroup, removed when dropped (once empty).
pub(crate) struct AttemptGroup {
    dir: PathBuf,
    /// Its line in `/proc/PID/cgroup`: `0::/.../cairn-PID-N`.
    line: String,
    /// `cgroup.procs`, open for the child to write itself into.
    procs: Arc<File>,
}

impl AttemptGroup {
    /// Makes a cgroup for one attempt, or `None` where cairn may not.
    pub(crate) fn make() -> Option<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = base()?;
        let name = format!("cairn-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let dir = base.dir.join(&name);
        std::fs::create_dir(&dir).ok()?;
        let Ok(procs) = std::fs::OpenOptions::new().write(true).open(dir.join("cgroup.procs")) else {
            let _ = std::fs::remove_dir(&dir);
            return None;
        };
        let line = format!("0::{}/{name}", base.path.trim_end_matches('/'));
        Some(Self { dir, line, procs: Arc::new(procs) })
    }

    /// What the child runs between `fork` and `exec` to enter the cgroup:
    /// one `write` of `0` (itself) to the open `cgroup.procs`, nothing that
    /// allocates or locks. Failing to enter fails the spawn.
    pub(crate) fn entry(&self) -> impl FnMut() -> std::io::Result<()> + Send + Sync + 'static {
        let procs = Arc::clone(&self.procs);
        move || (&*procs).write_all(b"0")
    }

    /// Kills every process in the cgroup at once (`cgroup.kill`, Linux 5.14
    /// on); on older kernels, each process it lists.
    pub(crate) fn kill(&self) {
        if std::fs::write(self.dir.join("cgroup.kill"), "1").is_err() {
            for pid in self.members() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }

    /// The live processes in the cgroup (zombies have left it).
    pub(crate) fn members(&self) -> Vec<i32> {
        let text = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        text.lines().filter_map(|line| line.trim().parse().ok()).collect()
    }

    /// Whether a process is in the cgroup, or was when it began to die: a
    /// process on its way out and a zombie keep the line of their cgroup.
    pub(crate) fn holds(&self, pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .is_ok_and(|text| text.lines().any(|l| l == self.line))
    }

    /// Whether a live process is still in it.
    pub(crate) fn populated(&self) -> bool {
        std::fs::read_to_string(self.dir.join("cgroup.events"))
            .is_ok_and(|text| text.lines().any(|line| line == "populated 1"))
    }

    /// Its directory, for tests and messages.
    #[cfg(test)]
    pub(crate) fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

impl Drop for AttemptGroup {
    fn drop(&mut self) {
        // Fails only while a process that would not die is inside: the
        // empty cgroup is then left behind, which holds nothing.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup2_mount_is_found_among_the_others() {
        let mountinfo = "\
35 28 0:30 / /sys/fs/cgroup/cpu rw,relatime shared:10 - cgroup cgroup rw,cpu
41 28 0:36 / /sys/fs/cgroup/unified rw,relatime shared:16 - cgroup2 cgroup2 rw
42 28 0:37 /nested /elsewhere rw - cgroup2 cgroup2 rw";
        assert_eq!(cgroup2_mount(mountinfo), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(cgroup2_mount("41 28 0:36 /x /y rw - cgroup2 cgroup2 rw"), None);
        assert_eq!(cgroup2_mount(""), None);
    }

    #[test]
    fn an_attempt_group_is_made_below_cairns_own_and_removed() {
        let Some(group) = AttemptGroup::make() else {
            eprintln!("no writable cgroup2 hierarchy here: attempts are fenced without one");
            return;
        };
        let dir = group.dir().to_path_buf();
        assert!(dir.join("cgroup.procs").exists());
        assert!(!group.populated());
        assert!(group.members().is_empty());
        drop(group);
        assert!(!dir.exists(), "{} was left behind", dir.display());
    }
}

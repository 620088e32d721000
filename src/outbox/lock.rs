//! Who may write to an outbox: one sampler, and one forwarder per sink, at a
//! time. Each role holds an exclusive `flock(2)` on its own file beside the
//! outbox (`outbox.sqlite.sampler.lock`, `outbox.sqlite.forward-postgres.lock`,
//! …) for as long as the process runs. The kernel releases the lock when the
//! process ends, however it ends (kill -9, power cut), so a lock is never stale;
//! the file only carries the holder's pid for the message of the one refused.
//!
//! Owns the lock files; must not decide what a command does when refused
//! (the caller passes the hint that tells the operator what to do).

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// What a lock lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Write samples (`run`, `sample`).
    Sampler,
    /// Move one sink's cursor (`run`'s forwarders, `replay`).
    Forwarder(&'static str),
}

impl Role {
    fn file_suffix(self) -> String {
        match self {
            Role::Sampler => "sampler.lock".into(),
            Role::Forwarder(sink) => format!("forward-{sink}.lock"),
        }
    }

    fn doing(self, outbox: &Path) -> String {
        match self {
            Role::Sampler => format!("sampling into {}", outbox.display()),
            Role::Forwarder(sink) => format!("forwarding {} to {sink}", outbox.display()),
        }
    }
}

/// A held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct Lock {
    _file: File,
    path: PathBuf,
}

impl Lock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The lock file of `role` for the outbox at `outbox`.
pub fn lock_path(outbox: &Path, role: Role) -> PathBuf {
    let mut name = outbox.as_os_str().to_owned();
    name.push(".");
    name.push(role.file_suffix());
    PathBuf::from(name)
}

/// Takes the lock of `role` on `outbox` without waiting. When another process
/// holds it, the error names that process's pid, what it is doing, and `hint`
/// (what the operator should do).
pub fn acquire(outbox: &Path, role: Role, hint: &str) -> anyhow::Result<Lock> {
    let path = lock_path(outbox, role);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "cannot create the data folder {}; set data_dir in the config to a writable folder",
                dir.display()
            )
        })?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    // SAFETY: flock(2) on a file descriptor we own; no memory is shared.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let holder = match holder_pid(&path) {
                Some(pid) => format!("another hxlog process (pid {pid})"),
                None => "another hxlog process".to_string(),
            };
            bail!(
                "{holder} is already {} (lock {}); {hint}",
                role.doing(outbox),
                path.display()
            );
        }
        return Err(err).with_context(|| format!("cannot lock {}", path.display()));
    }
    // One write of a fixed width, never a truncation: whoever reads the file
    // sees a whole pid (the previous holder's or ours), never an empty file.
    let text = format!("{:<20}\n", std::process::id());
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.write_all(text.as_bytes()))
        .with_context(|| format!("cannot write the lock file {}", path.display()))?;
    Ok(Lock { _file: file, path })
}

/// The pid written in a lock file, if any.
fn holder_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_per_role_and_roles_are_independent() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = dir.path().join("data/outbox.sqlite");
        let sampler = acquire(&outbox, Role::Sampler, "stop it").unwrap();
        assert_eq!(
            sampler.path(),
            dir.path().join("data/outbox.sqlite.sampler.lock")
        );
        // flock conflicts between open file descriptions, even in one process
        let err = format!(
            "{:#}",
            acquire(&outbox, Role::Sampler, "stop it").unwrap_err()
        );
        let pid = std::process::id();
        assert!(
            err.contains(&format!("(pid {pid}) is already sampling into"))
                && err.ends_with("; stop it"),
            "{err}"
        );
        // timer mode: a replay forwards while a sample is taken
        let pg = acquire(&outbox, Role::Forwarder("postgres"), "wait").unwrap();
        let wps = acquire(&outbox, Role::Forwarder("webpubsub"), "wait").unwrap();
        let err = format!(
            "{:#}",
            acquire(&outbox, Role::Forwarder("postgres"), "wait").unwrap_err()
        );
        assert!(
            err.contains("forwarding") && err.contains("to postgres"),
            "{err}"
        );
        drop((sampler, pg, wps));
        let again = acquire(&outbox, Role::Sampler, "stop it").unwrap();
        assert_eq!(holder_pid(again.path()), Some(pid));
    }
}

//! A logger installation in a temp dir for sink tests: config, secrets, and
//! helpers to run `hxlog` commands against it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::harness::{self as common, KillOnDrop};

use serde_json::{Value, json};

/// A temp dir with `hxlog.json` (mock sensors, 1 s interval, data in `data/`).
pub struct Logger {
    pub dir: tempfile::TempDir,
}

impl Logger {
    /// A logger whose config is the defaults below merged with `extra`.
    pub fn new(extra: Value) -> Logger {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = json!({
            "device_id": "hx-test",
            "interval": "1s",
            "data_dir": "data",
            "sensor_source": "mock",
            "secrets": "secrets.json",
            "retry_max": "1s",
            "sqlite_synchronous": "normal",
            // this machine's kernel clock may be unsynchronised: tests of
            // trustworthy time set clock_sync themselves (tests/e2e/clock.rs)
            "clock_sync": "always",
        });
        for (k, v) in extra.as_object().unwrap() {
            cfg[k] = v.clone();
        }
        std::fs::write(dir.path().join("hxlog.json"), cfg.to_string()).unwrap();
        Logger { dir }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `hxlog --config <dir>/hxlog.json ARGS` with a clean environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = common::hxlog();
        c.arg("--config")
            .arg(self.path().join("hxlog.json"))
            .args(args)
            .current_dir(self.path())
            .env("RUST_LOG", "info");
        c
    }

    /// Runs a command to completion.
    pub fn output(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs a command and asserts it succeeded.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "hxlog {args:?} failed with {}:\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Starts `hxlog run`, stderr captured to `<dir>/run.log`; killed if the
    /// test ends (or panics) with it still running.
    pub fn spawn_run(&self) -> KillOnDrop {
        let log = std::fs::File::create(self.log_path()).unwrap();
        KillOnDrop::spawn(self.cmd(&["run"]).stdout(Stdio::null()).stderr(log))
    }

    /// The log of the last `spawn_run`.
    pub fn log_path(&self) -> PathBuf {
        self.path().join("run.log")
    }

    /// `hxlog status --json`.
    pub fn status(&self) -> Value {
        let out = self.ok(&["status", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Samples in the outbox.
    pub fn samples(&self) -> u64 {
        self.status()["outbox"]["samples"].as_u64().unwrap()
    }

    /// The state of one sink from `status --json`.
    pub fn sink(&self, name: &str) -> Value {
        self.status()["outbox"]["sinks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }
}

/// Sends SIGTERM and waits (at most `within`) for a clean exit; returns the exit status.
pub fn terminate(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    common::sigterm(child.id());
    common::wait_exit(child, within).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("hxlog did not exit within {within:?} of SIGTERM")
    })
}

/// Polls `cond` until it holds, failing with `what` after `timeout`.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, cond: impl FnMut() -> bool) {
    assert!(
        common::wait_until(timeout, cond),
        "timed out after {timeout:?} waiting until {what}"
    );
}

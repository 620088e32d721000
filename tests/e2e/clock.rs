//! Trustworthy time against a real wall-clock error: libfaketime gives the
//! hxlog process a clock three days behind (a stale fake-hwclock), stepped to
//! true time mid-run by renaming its timestamp file, while `CLOCK_BOOTTIME`
//! and tokio's timers stay true (`FAKETIME_DONT_FAKE_MONOTONIC=1`).
//! `clock_sync` is a file here (the machine's kernel clock is synced).

use hxlog_test_support::SpawnGuarded;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use crate::logger::{Logger, terminate, wait_until};
use crate::pg::TestDb;
use crate::wps_server::{self, TestServer};

const KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ-9f3a=";
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const BEHIND: SignedDuration = SignedDuration::from_hours(72);
const WAIT: Duration = Duration::from_secs(60);

/// A logger whose clock can be set three days behind and stepped.
struct Clocked {
    l: Logger,
}

impl Clocked {
    /// A logger (`Logger::new(extra)`) whose `clock_sync` is the file
    /// `synchronized` in its folder, absent for now, and whose fake clock is
    /// three days behind.
    fn new(extra: Value) -> Clocked {
        assert!(
            Path::new(LIBFAKETIME).exists(),
            "{LIBFAKETIME} missing: apt-get install faketime libfaketime (.ci/run does)"
        );
        let l = Logger::new(extra);
        let cfg_path = l.path().join("hxlog.json");
        let mut cfg: Value =
            serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
        cfg["clock_sync"] = l.path().join("synchronized").display().to_string().into();
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        // no sink unless a test writes its own secrets
        let secrets = l.path().join("secrets.json");
        std::fs::write(&secrets, "{}").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = Clocked { l };
        c.set_fake("-3d");
        c
    }

    fn faketime_file(&self) -> PathBuf {
        self.l.path().join("faketime")
    }

    /// Replaces the fake clock's offset atomically (write, then rename).
    fn set_fake(&self, offset: &str) {
        let tmp = self.l.path().join("faketime.new");
        std::fs::write(&tmp, format!("{offset}\n")).unwrap();
        std::fs::rename(&tmp, self.faketime_file()).unwrap();
    }

    /// Steps the clock to true time, then lets `clock_sync` see the sync,
    /// in that order (as an NTP daemon does). Returns true time after the step.
    fn sync(&self) -> Timestamp {
        self.set_fake("+0");
        let stepped = Timestamp::now();
        std::fs::write(self.l.path().join("synchronized"), "").unwrap();
        stepped
    }

    /// `hxlog ARGS` under the fake clock.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.l.cmd(args);
        c.env("LD_PRELOAD", LIBFAKETIME)
            .env("FAKETIME_TIMESTAMP_FILE", self.faketime_file())
            .env("FAKETIME_NO_CACHE", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        c
    }

    fn spawn_run(&self) -> hxlog_test_support::KillOnDrop {
        let log = std::fs::File::create(self.l.log_path()).unwrap();
        self.cmd(&["run"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn_guarded()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.l.log_path()).unwrap_or_default()
    }

    /// Every sample in the outbox (export, true clock), oldest first.
    fn exported(&self) -> Vec<Value> {
        let out = self
            .l
            .ok(&["export", "--since", "2000-01-01", "--format", "jsonl"]);
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    fn clock_status(&self) -> Value {
        self.l.status()["clock"].clone()
    }
}

fn ts(v: &Value) -> Timestamp {
    v.as_str().unwrap().parse().unwrap()
}

/// A corrected sample carries true time: its raw time plus exactly the fake
/// clock's error, within 1 s.
#[track_caller]
fn assert_corrected(s: &Value) {
    assert_eq!(s["clock"], "corrected", "{s}");
    let error = ts(&s["taken_at"]).duration_since(ts(&s["taken_at_raw"])) - BEHIND;
    assert!(
        error.abs() < SignedDuration::from_secs(1),
        "taken_at is {error:#} off true time: {s}"
    );
}

fn write_secrets(l: &Logger, srv: &TestServer, db: &TestDb) {
    let p = db.write_secrets(l.path(), None, &[("PG_DB_SSLMODE", "disable")]);
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v["AZURE_WEBPUBSUB_CONNECTION_STRING"] = srv.connection_string().into();
    std::fs::write(&p, v.to_string()).unwrap();
}

/// The last copy of each sample the fake service accepted, by id.
fn last_published(srv: &TestServer) -> std::collections::HashMap<String, Value> {
    let mut by_id = std::collections::HashMap::new();
    for m in srv.accepted_messages() {
        wps_server::check_message(&m).unwrap();
        for s in m["samples"].as_array().unwrap() {
            by_id.insert(s["id"].as_str().unwrap().to_string(), s.clone());
        }
    }
    by_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_three_days_behind_is_corrected_everywhere_once_the_clock_syncs() {
    let Some(db) = TestDb::create() else { return };
    let srv = wps_server::start("heatexchanger", KEY).await;
    let c = Clocked::new(json!({"clock_sync_wait": "10m"}));
    write_secrets(&c.l, &srv, &db);
    let mut run = c.spawn_run();
    wait_until(WAIT, "three unsynced samples", || {
        c.clock_status()["unsynced_samples"].as_u64() >= Some(3)
    });
    assert!(
        c.log().contains("the system clock is not synchronised") && c.log().contains("timedatectl"),
        "one clear warning naming the cause: {}",
        c.log()
    );
    let st = c.clock_status();
    assert_eq!(st["state"], "unsynced", "{st}");
    // held back, not sent with a wrong time
    assert_eq!(db.samples(), 0);
    assert!(srv.accepted_ids().is_empty());

    let stepped = c.sync();
    wait_until(WAIT, "the unsynced samples corrected and delivered", || {
        let st = c.l.status();
        st["clock"]["unsynced_samples"] == 0
            && st["outbox"]["sinks"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["pending"] == 0)
            && st["outbox"]["corrected_samples"].as_u64() >= Some(3)
    });
    assert!(terminate(&mut run, hxlog_test_support::SIGTERM_DEADLINE).success());

    let samples = c.exported();
    let corrected: Vec<&Value> = samples
        .iter()
        .filter(|s| s["clock"] == "corrected")
        .collect();
    assert!(corrected.len() >= 3, "{samples:?}");
    for s in &samples {
        if s["clock"] == "corrected" {
            assert_corrected(s);
        } else {
            assert_eq!(s["clock"], "synced", "{s}");
            assert!(
                ts(&s["taken_at"]) >= stepped - SignedDuration::from_secs(1),
                "{s}"
            );
        }
    }
    assert_eq!(c.clock_status()["state"], "synced");
    // Postgres: one row per sample, the corrected ones with true time
    let n = samples.len() as i64;
    assert_eq!(
        db.scalar("SELECT count(DISTINCT sample_id) FROM samples"),
        n
    );
    assert_eq!(db.samples(), n);
    assert_eq!(
        db.scalar("SELECT count(*) FROM samples WHERE clock = 'corrected' AND abs(extract(epoch FROM taken_at - taken_at_raw) - 259200) < 1"),
        corrected.len() as i64
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM samples WHERE clock = 'unsynced'"),
        0
    );
    // Web PubSub: every sample, the corrected ones corrected
    let published = last_published(&srv);
    assert_eq!(published.len(), samples.len());
    for s in &corrected {
        let p = &published[s["id"].as_str().unwrap()];
        assert_corrected(p);
        assert_eq!(p["taken_at"], s["taken_at"]);
    }
    // export --since selects on corrected time: the corrected samples are in
    // the last hour of true time
    let recent = c.l.ok(&["export", "--since", "1h", "--format", "jsonl"]);
    assert_eq!(
        String::from_utf8(recent.stdout).unwrap().lines().count(),
        samples.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsynced_samples_go_out_after_the_wait_and_are_replaced_once_corrected() {
    let Some(db) = TestDb::create() else { return };
    let srv = wps_server::start("heatexchanger", KEY).await;
    let c = Clocked::new(json!({"clock_sync_wait": "2s"}));
    write_secrets(&c.l, &srv, &db);
    let mut run = c.spawn_run();
    // a boot that does not synchronise: after the wait, samples go out
    // unsynced (Web PubSub tokens are minted on the service's time, learned
    // from the Date of the first refusal, as the real service refuses a token
    // from a clock three days behind)
    wait_until(WAIT, "unsynced samples in Postgres and Web PubSub", || {
        db.samples() > 0
            && db.scalar("SELECT count(*) FROM samples WHERE clock = 'unsynced'") >= 3
            && last_published(&srv)
                .values()
                .filter(|s| s["clock"] == "unsynced")
                .count()
                >= 3
    });
    assert_eq!(
        db.scalar("SELECT count(*) FROM samples WHERE clock = 'unsynced' AND taken_at_raw IS NULL"),
        db.samples()
    );
    for s in last_published(&srv).values() {
        assert_eq!(s["clock"], "unsynced", "{s}");
        assert_eq!(s["taken_at_raw"], Value::Null);
    }

    c.sync();
    wait_until(WAIT, "the delivered unsynced samples replaced", || {
        db.scalar("SELECT count(*) FROM samples WHERE clock = 'unsynced'") == 0
            && last_published(&srv)
                .values()
                .all(|s| s["clock"] != "unsynced")
            && c.clock_status()["unsynced_samples"] == 0
    });
    assert!(terminate(&mut run, hxlog_test_support::SIGTERM_DEADLINE).success());
    let samples = c.exported();
    let corrected: Vec<&Value> = samples
        .iter()
        .filter(|s| s["clock"] == "corrected")
        .collect();
    assert!(corrected.len() >= 3);
    for s in &corrected {
        assert_corrected(s);
    }
    // one row per sample, updated in place
    assert_eq!(
        db.scalar("SELECT count(*) - count(DISTINCT sample_id) FROM samples"),
        0
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM samples WHERE clock = 'corrected' AND abs(extract(epoch FROM taken_at - taken_at_raw) - 259200) < 1"),
        corrected.len() as i64
    );
    // Web PubSub: the same id published again, corrected
    let published = last_published(&srv);
    let ids = srv.accepted_ids();
    let republished = corrected
        .iter()
        .filter(|s| ids.iter().filter(|i| **i == s["id"]).count() >= 2)
        .count();
    assert!(republished >= 3, "{republished} ids published again");
    for s in &corrected {
        assert_corrected(&published[s["id"].as_str().unwrap()]);
    }
    assert!(
        c.log()
            .contains("sent samples again with their corrected time"),
        "{}",
        c.log()
    );
}

#[test]
fn a_restart_between_the_unsynced_samples_and_the_sync_still_corrects_them() {
    let c = Clocked::new(json!({}));
    let mut run = c.spawn_run();
    wait_until(WAIT, "three unsynced samples", || {
        c.clock_status()["unsynced_samples"].as_u64() >= Some(3)
    });
    assert!(terminate(&mut run, hxlog_test_support::SIGTERM_DEADLINE).success());
    let before = c.exported();
    c.sync();
    let mut run = c.spawn_run();
    wait_until(WAIT, "the earlier samples corrected", || {
        c.clock_status()["unsynced_samples"] == 0
    });
    assert!(terminate(&mut run, hxlog_test_support::SIGTERM_DEADLINE).success());
    let after = c.exported();
    for b in &before {
        let a = after.iter().find(|a| a["id"] == b["id"]).unwrap();
        assert_corrected(a);
        assert_eq!(a["taken_at_raw"], b["taken_at"]);
    }
}

#[test]
fn timer_mode_samples_are_stamped_and_corrected_by_the_next_sample() {
    let c = Clocked::new(json!({}));
    let mut taken = vec![];
    for _ in 0..3 {
        let out = c.cmd(&["sample", "--json"]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(s["clock"], "unsynced", "{s}");
        taken.push(s);
    }
    c.sync();
    let out = c.cmd(&["sample", "--json"]).output().unwrap();
    assert!(out.status.success());
    let last: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(last["clock"], "synced");
    let after = c.exported();
    for t in &taken {
        let a = after.iter().find(|a| a["id"] == t["id"]).unwrap();
        assert_corrected(a);
    }
    let st = c.clock_status();
    assert_eq!(
        (
            st["unsynced_samples"].clone(),
            st["corrected_samples"].clone()
        ),
        (json!(0), json!(3))
    );
}

#[test]
fn a_clock_step_while_synced_is_logged_and_samples_stay_synced() {
    let c = Clocked::new(json!({}));
    c.sync();
    let mut run = c.spawn_run();
    wait_until(WAIT, "two synced samples", || c.l.samples() >= 2);
    // an NTP step of 30 s forward
    c.set_fake("+30");
    wait_until(WAIT, "the step logged", || {
        c.log()
            .contains("the system clock was stepped while synchronised")
    });
    assert!(terminate(&mut run, hxlog_test_support::SIGTERM_DEADLINE).success());
    let log = c.log();
    let step: f64 = log
        .split("step=")
        .nth(1)
        .and_then(|rest| rest.split('s').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no step= field: {log}"));
    assert!((step - 30.0).abs() < 1.0, "step {step}: {log}");
    for s in c.exported() {
        assert_eq!(s["clock"], "synced", "{s}");
    }
}

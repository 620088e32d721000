//! `hxlog run` as systemd runs it: sd_notify READY/WATCHDOG/STOPPING on a fake
//! `NOTIFY_SOCKET`, JSON logs, the optional log file.

use hxlog_test_support::SpawnGuarded;
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::logger::{Logger, terminate};

/// A fake `NOTIFY_SOCKET` whose datagrams a thread collects as they arrive.
/// It never stops reading: sd_notify sends block once the socket's queue
/// (`net.unix.max_dgram_qlen`, 10 here) is full, which would stall hxlog's
/// sampling loop and its shutdown.
/// Each datagram is kept with whether `outbox` existed the moment it arrived.
struct NotifySocket {
    got: Arc<Mutex<Vec<(String, bool)>>>,
}

impl NotifySocket {
    fn bind(path: &std::path::Path, outbox: std::path::PathBuf) -> NotifySocket {
        let sock = UnixDatagram::bind(path).unwrap();
        let got = Arc::new(Mutex::new(vec![]));
        let sink = got.clone();
        // ends with the test binary (the socket file goes with the temp dir)
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock().unwrap().push((text, outbox.exists()));
            }
        });
        NotifySocket { got }
    }

    /// Every datagram so far.
    fn all(&self) -> Vec<String> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(m, _)| m.clone())
            .collect()
    }

    /// Whether the outbox existed when the first datagram with `what` arrived.
    fn outbox_existed_at(&self, what: &str) -> Option<bool> {
        let got = self.got.lock().unwrap();
        got.iter().find(|(m, _)| m.contains(what)).map(|(_, e)| *e)
    }

    /// How many datagrams so far contain `what`.
    fn count(&self, what: &str) -> usize {
        self.all().iter().filter(|m| m.contains(what)).count()
    }

    /// Waits (deadline scaled) until `what` has arrived `n` times in all.
    #[track_caller]
    fn wait_for(&self, what: &str, n: usize) {
        let ok = hxlog_test_support::wait_until(Duration::from_secs(30), || self.count(what) >= n);
        assert!(ok, "timed out waiting for {n} {what}; got {:?}", self.all());
    }
}

#[test]
fn run_notifies_systemd_and_pets_the_watchdog() {
    let l = Logger::new(json!({ "interval": "1m", "secrets": null }));
    let path = l.path().join("notify.sock");
    let sock = NotifySocket::bind(&path, l.path().join("data/outbox.sqlite"));
    let log = std::fs::File::create(l.log_path()).unwrap();
    let mut child = l
        .cmd(&["run"])
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "400000")
        .stderr(log)
        .spawn_guarded();
    // READY once the outbox is open: checked the moment READY=1 arrives
    sock.wait_for("READY=1", 1);
    assert_eq!(
        sock.outbox_existed_at("READY=1"),
        Some(true),
        "READY before the outbox exists"
    );
    // then WATCHDOG every 200 ms although the sampling interval is a minute
    sock.wait_for("WATCHDOG=1", 3);
    let got = sock.all();
    let ready = got.iter().position(|m| m.contains("READY=1")).unwrap();
    let first_watchdog = got.iter().position(|m| m.contains("WATCHDOG=1")).unwrap();
    assert!(ready <= first_watchdog, "{got:?}");
    assert!(terminate(&mut child, hxlog_test_support::SIGTERM_DEADLINE).success());
    sock.wait_for("STOPPING=1", 1);
    // state saved: the sample taken at start is in the outbox
    assert_eq!(l.samples(), 1);
}

#[test]
fn a_hung_sensor_read_stops_the_watchdog_pings() {
    use hxlog_test_support::{IDS, Setup, w1_slave_text};
    let mut setup = Setup::new();
    setup.set("interval", json!("1m"));
    let bus = setup.healthy_bus([60.0, 40.0, 20.0, 35.0]);
    // T1's w1_slave becomes a FIFO: reading it blocks, as a read stuck in
    // the kernel would, until something writes to it
    let fifo = bus.w1_slave_path(IDS[0]);
    std::fs::remove_file(&fifo).unwrap();
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
    let path = setup.dir().join("notify.sock");
    let sock = NotifySocket::bind(&path, setup.outbox_path());
    let mut child = setup
        .cmd(&["run"])
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn_guarded();
    sock.wait_for("READY=1", 1);
    // The first sample is taken at once and hangs on T1. A ping is due every
    // 200 ms: in a 3 s window at most the one sent before the read began may
    // arrive. (An observation window, not a synchronisation: a slow machine
    // cannot make a ping appear that is not sent.)
    let before = sock.count("WATCHDOG=1");
    std::thread::sleep(Duration::from_secs(3));
    let pings = sock.count("WATCHDOG=1");
    assert!(
        pings <= 1,
        "{pings} WATCHDOG=1 ({before} before the window) while a sensor read hangs: \
         systemd would never restart hxlog"
    );
    // the read returns: the pings come back
    std::fs::write(&fifo, w1_slave_text(0x28, 60.0)).unwrap();
    sock.wait_for("WATCHDOG=1", pings + 3);
    assert!(terminate(&mut child, hxlog_test_support::SIGTERM_DEADLINE).success());
    assert_eq!(setup.sample_count(), 1);
}

#[test]
fn json_logs_and_a_log_file_that_survives_rotation() {
    let l = Logger::new(json!({ "log_file": "hxlog.log", "secrets": null }));
    let out = l.cmd(&["--log-format", "json", "sample"]).output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(!lines.is_empty());
    assert!(
        lines
            .iter()
            .all(|v| v["level"].is_string() && v["fields"].is_object()),
        "{stderr}"
    );
    let file = std::fs::read_to_string(l.path().join("hxlog.log")).unwrap();
    assert!(file.contains("simulated heat exchanger"), "{file}");
    // logrotate moves the file away: the next run writes a new one
    std::fs::rename(l.path().join("hxlog.log"), l.path().join("hxlog.log.1")).unwrap();
    l.ok(&["sample"]);
    assert!(
        std::fs::read_to_string(l.path().join("hxlog.log"))
            .unwrap()
            .contains("simulated")
    );
}

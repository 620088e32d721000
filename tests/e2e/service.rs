//! `hxlog run` as systemd runs it: sd_notify READY/WATCHDOG/STOPPING on a fake
//! `NOTIFY_SOCKET`, JSON logs, the optional log file.

use hxlog_test_support::SpawnGuarded;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::logger::{Logger, terminate};

/// Collects the datagrams hxlog sends to the fake notify socket until `until` holds.
fn receive_until(
    sock: &UnixDatagram,
    timeout: Duration,
    until: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + hxlog_test_support::scaled(timeout);
    let mut got = vec![];
    let mut buf = [0u8; 4096];
    while !until(&got) {
        assert!(
            Instant::now() < deadline,
            "timed out; notifications so far: {got:?}"
        );
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

#[test]
fn run_notifies_systemd_and_pets_the_watchdog() {
    let l = Logger::new(json!({ "interval": "1m", "secrets": null }));
    let path = l.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let log = std::fs::File::create(l.log_path()).unwrap();
    let mut child = l
        .cmd(&["run"])
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "400000")
        .stderr(log)
        .spawn_guarded();
    // READY once the outbox is open: checked the moment READY=1 arrives
    let mut got = receive_until(&sock, Duration::from_secs(30), |g| {
        g.iter().any(|m| m.contains("READY=1"))
    });
    assert!(
        l.path().join("data/outbox.sqlite").exists(),
        "READY before the outbox exists"
    );
    // then WATCHDOG every 200 ms although the sampling interval is a minute
    got.extend(receive_until(&sock, Duration::from_secs(30), |g| {
        g.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3
    }));
    let ready = got.iter().position(|m| m.contains("READY=1")).unwrap();
    let first_watchdog = got.iter().position(|m| m.contains("WATCHDOG=1")).unwrap();
    assert!(ready <= first_watchdog, "{got:?}");
    assert!(terminate(&mut child, hxlog_test_support::SIGTERM_DEADLINE).success());
    let rest = receive_until(&sock, hxlog_test_support::SIGTERM_DEADLINE, |g| {
        g.iter().any(|m| m.contains("STOPPING=1"))
    });
    assert!(rest.iter().any(|m| m.contains("STOPPING=1")));
    // state saved: the sample taken at start is in the outbox
    assert_eq!(l.samples(), 1);
}

#[test]
fn a_hung_sensor_read_stops_the_watchdog_pings() {
    use hxlog_test_support::{IDS, Setup, SpawnGuarded, w1_slave_text};
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
    let sock = UnixDatagram::bind(&path).unwrap();
    let mut child = setup
        .cmd(&["run"])
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn_guarded();
    receive_until(&sock, Duration::from_secs(30), |g| {
        g.iter().any(|m| m.contains("READY=1"))
    });
    // The first sample is taken at once and hangs on T1. A ping is due every
    // 200 ms: in 3 s at most the one sent before the read began may arrive
    // (waiting longer than this proves no more; a slow machine cannot make a
    // ping appear that is not sent).
    let quiet = Instant::now() + Duration::from_secs(3);
    let mut pings = 0;
    let mut buf = [0u8; 4096];
    while Instant::now() < quiet {
        if let Ok(n) = sock.recv(&mut buf) {
            pings += usize::from(String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1"));
        }
    }
    assert!(
        pings <= 1,
        "{pings} WATCHDOG=1 while a sensor read hangs: systemd would never restart hxlog"
    );
    // the read returns: the pings come back
    std::fs::write(&fifo, w1_slave_text(0x28, 60.0)).unwrap();
    receive_until(&sock, Duration::from_secs(30), |g| {
        g.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3
    });
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

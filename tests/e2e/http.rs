//! The HTTP endpoints of `hxlog run` and `hxlog serve` (issue 12): `/healthz`
//! against a sensor read that blocks, `/metrics` through `promtool` and a real
//! Prometheus, bad parameters, a flood of requests beside sampling, a busy
//! port, the non-loopback warning, the dashboard in headless Chromium,
//! alarms reaching Web PubSub after an outage, a streamed 100,000-row CSV,
//! and idle connections beside the dashboard and sampling.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::client::{free_port, get, try_get, wait_serving};
use crate::common::{Fault, IDS, Running, Setup, wait_until};

/// A setup with a healthy bus whose `run` serves on a free port.
fn serving_setup() -> (Setup, u16) {
    let mut s = Setup::new();
    let port = free_port();
    s.set("http_listen", json!(format!("127.0.0.1:{port}")));
    s.healthy_bus([70.0, 50.0, 15.0, 35.0]);
    (s, port)
}

fn start(s: &Setup, port: u16) -> Running {
    let run = Running::spawn(&mut s.cmd(&["run"]));
    assert!(
        wait_serving(port, Duration::from_secs(30)),
        "hxlog run never served on {port}: {:?}",
        run.lines()
    );
    run
}

fn samples_logged(run: &Running) -> usize {
    run.lines()
        .iter()
        .filter(|l| l.contains(" sample "))
        .count()
}

/// Replaces `id`'s `w1_slave` with a FIFO nobody writes to: reading it blocks.
fn block_sensor(s: &Setup, id: &str) -> std::path::PathBuf {
    let path = s.bus().w1_slave_path(id);
    std::fs::remove_file(&path).unwrap();
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) reads a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
    path
}

#[test]
fn healthz_turns_503_while_a_sensor_read_blocks_and_status_says_the_same() {
    let (s, port) = serving_setup();
    let mut run = start(&s, port);
    assert!(wait_until(Duration::from_secs(30), || get(
        port, "/healthz"
    )
    .status
        == 200));
    assert_eq!(get(port, "/healthz").body, "ok\n");
    // Block only after a sample is stored: until then healthz judges from
    // the start of `run` and status has no sample to judge from.
    assert!(wait_until(Duration::from_secs(30), || samples_logged(&run) >= 1));
    let fifo = block_sensor(&s, IDS[1]);
    let mut last = None;
    assert!(
        wait_until(Duration::from_secs(60), || {
            let a = get(port, "/healthz");
            let stalled = a.status == 503;
            last = Some(a);
            stalled
        }),
        "healthz never turned 503: {last:?}"
    );
    let body = last.unwrap().body;
    assert!(
        body.starts_with("last sample ") && body.contains("s ago, interval 1 s"),
        "{body}"
    );
    let status = s.run(&["status"]);
    status.ok();
    assert!(
        status.stdout.contains("health:   NOT OK: last sample "),
        "{}",
        status.stdout
    );
    assert_eq!(
        s.status_json()["health"]["healthy"],
        json!(false),
        "status --json agrees"
    );
    // The read completes (a writer appears; the file becomes a regular one
    // again before the writer closes): sampling and health come back.
    let mut writer = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    use std::io::Write;
    writer
        .write_all(crate::common::w1_slave_text(0x28, 50.0).as_bytes())
        .unwrap();
    s.bus().sensor(IDS[1], 50.0);
    drop(writer);
    assert!(wait_until(Duration::from_secs(60), || get(
        port, "/healthz"
    )
    .status
        == 200));
    assert!(run.terminate(crate::common::SIGTERM_DEADLINE).is_some());
}

/// `promtool check metrics` on `text`; panics with its output when it fails.
fn promtool(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is needed");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_pass_promtool_and_leave_out_a_missing_temperature() {
    let (s, port) = serving_setup();
    s.bus().fault(IDS[2], Fault::CrcNo);
    let mut run = start(&s, port);
    assert!(wait_until(Duration::from_secs(30), || samples_logged(&run) >= 1));
    let first = get(port, "/metrics");
    assert_eq!(first.status, 200);
    assert!(
        first
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{first:?}"
    );
    // counters grow with the samples stored after the first scrape
    let before = samples_logged(&run);
    assert!(wait_until(Duration::from_secs(30), || samples_logged(&run)
        >= before + 2));
    let text = get(port, "/metrics").body;
    promtool(&text);
    let t1 = format!(
        "hxlog_temperature_celsius{{role=\"T1\",sensor_id=\"{}\"}}",
        IDS[0]
    );
    assert_eq!(metric(&text, &t1), Some(70.0), "{text}");
    assert!(
        !text.contains("hxlog_temperature_celsius{role=\"T3\""),
        "{text}"
    );
    assert_eq!(metric(&text, "hxlog_reading_ok{role=\"T3\"}"), Some(0.0));
    assert_eq!(metric(&text, "hxlog_reading_ok{role=\"T1\"}"), Some(1.0));
    assert!(
        metric(&text, "hxlog_samples_total").unwrap() >= 1.0,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "hxlog_readings_total{role=\"T3\",quality=\"crc_no\"}"
        )
        .unwrap()
            >= 1.0,
        "{text}"
    );
    assert_eq!(metric(&text, "hxlog_healthy"), Some(1.0));
    assert!(text.contains("hxlog_build_info{version=\""), "{text}");
    assert!(run.terminate(crate::common::SIGTERM_DEADLINE).is_some());
}

#[test]
fn bad_parameters_get_400_with_a_message() {
    let (s, port) = serving_setup();
    let mut run = start(&s, port);
    for (path, says) in [
        ("/api/samples?since=yesterday", "since=\"yesterday\""),
        ("/api/samples?since=1h&until=2h", "must be before until"),
        ("/api/samples?max_points=0", "from 2 to 5000"),
        (
            "/api/samples?max_points=99999999999999999999999",
            "from 2 to 5000",
        ),
        ("/api/samples?max_points=%FF%FE", "max_points"),
        ("/api/samples?nope=1", "unknown parameter \"nope\""),
        ("/api/export.csv?since=2026-13-45", "since="),
        ("/api/export.csv?max_points=3", "unknown parameter"),
    ] {
        let a = get(port, path);
        assert_eq!(a.status, 400, "{path}: {a:?}");
        assert!(a.body.contains(says), "{path}: {}", a.body);
    }
    let ok = get(port, "/api/samples?since=1h&max_points=2");
    assert_eq!(ok.status, 200, "{ok:?}");
    assert!(ok.json()["t"].as_array().unwrap().len() <= 2, "{}", ok.body);
    assert_eq!(get(port, "/nothing-here").status, 404);
    assert!(run.terminate(crate::common::SIGTERM_DEADLINE).is_some());
}

#[test]
fn a_flood_of_requests_gets_503s_and_never_stops_sampling() {
    let (s, port) = serving_setup();
    // a history that makes each /api/samples request do real work
    s.run(&["simulate", "--count", "20000", "--interval", "10s"])
        .ok();
    let mut run = start(&s, port);
    assert!(wait_until(Duration::from_secs(30), || samples_logged(&run) >= 1));
    let flood_start = jiff::Timestamp::now();
    let before = s.status_json()["outbox"]["samples"].as_u64().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood: Vec<_> = (0..24)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                // (refused, unexpected answers): judged after the flood, with
                // the logger's log at hand
                let (mut refused, mut unexpected) = (0, vec![]);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(a) = try_get(port, "/api/samples?since=30d&max_points=5000") {
                        if a.status == 503 && a.header("retry-after") == Some("1") {
                            refused += 1;
                        } else if a.status != 200 {
                            unexpected.push(a);
                        }
                    }
                }
                (refused, unexpected)
            })
        })
        .collect();
    let grew = wait_until(Duration::from_secs(60), || {
        s.status_json()["outbox"]["samples"].as_u64().unwrap() >= before + 8
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut refused, mut unexpected) = (0, vec![]);
    for t in flood {
        let (r, u) = t.join().unwrap();
        refused += r;
        unexpected.extend(u);
    }
    let alive = run.is_running();
    assert!(
        grew && unexpected.is_empty() && alive,
        "sampling grew: {grew}; answers other than 200 or 503 with Retry-After: {} (first: {:?}); logger still running: {alive}; its log: {:?}",
        unexpected.len(),
        unexpected.first(),
        run.lines()
    );
    assert!(refused > 0, "the in-flight limit never answered 503");
    // On schedule throughout, by /healthz's rule: no gap between two samples
    // longer than the stall limit (interval 1 s: 6 s).
    let taken: Vec<jiff::Timestamp> = s
        .export_csv(&["--since", &flood_start.to_string()])
        .rows
        .iter()
        .map(|r| r["taken_at"].parse().unwrap())
        .collect();
    let worst = taken
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).unsigned_abs())
        .max()
        .unwrap();
    assert!(
        worst <= crate::common::scaled(Duration::from_secs(6)),
        "sampling paused {worst:?} during the flood"
    );
    assert!(get(port, "/healthz").status == 200);
    assert!(run.terminate(crate::common::SIGTERM_DEADLINE).is_some());
}

#[test]
fn a_busy_port_is_a_clear_error_for_serve_and_run_keeps_sampling() {
    let (s, port) = serving_setup();
    let _taken = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    s.run(&["sample"]).ok();
    let out = s.run(&["serve"]);
    out.failed();
    assert!(
        out.stderr
            .contains(&format!("cannot listen on 127.0.0.1:{port}"))
            && out.stderr.contains("set http_listen to a free address"),
        "{out}"
    );
    let mut run = Running::spawn(&mut s.cmd(&["run"]));
    assert!(run.wait_for_line(Duration::from_secs(30), |l| l.contains("NOT SERVING")));
    let before = samples_logged(&run);
    assert!(wait_until(Duration::from_secs(30), || samples_logged(&run)
        >= before + 2));
    assert!(run.terminate(crate::common::SIGTERM_DEADLINE).is_some());
}

#[test]
fn serve_warns_when_not_on_loopback_and_reads_the_outbox_without_writing() {
    let s = Setup::new();
    s.healthy_bus([70.0, 50.0, 15.0, 35.0]);
    for _ in 0..3 {
        s.run(&["sample"]).ok();
    }
    let port = free_port();
    let mut serve = Running::spawn(&mut s.cmd(&["serve", "--listen", &format!("0.0.0.0:{port}")]));
    assert!(
        wait_serving(port, Duration::from_secs(30)),
        "{:?}",
        serve.lines()
    );
    assert!(
        serve.wait_for_line(Duration::from_secs(10), |l| l.contains("WARN")
            && l.contains("not a loopback address")),
        "{:?}",
        serve.lines()
    );
    let current = get(port, "/api/current").json();
    assert_eq!(current["sample"]["seq"], json!(3), "{current}");
    assert_eq!(current["sinks"], json!([]), "no sink configured: {current}");
    // serve takes no sampler lock: a timer's sample still runs beside it
    s.run(&["sample"]).ok();
    assert_eq!(get(port, "/api/current").json()["sample"]["seq"], json!(4));
    // the CSV download is export's CSV of the same window
    let csv = get(port, "/api/export.csv?since=1h");
    assert_eq!(csv.status, 200, "{csv:?}");
    assert!(
        csv.header("content-disposition")
            .unwrap()
            .starts_with("attachment")
    );
    let export = s.run(&["export", "--since", "1h"]);
    assert_eq!(
        csv.body.lines().next(),
        export.stdout.lines().next(),
        "same header"
    );
    assert_eq!(csv.body.lines().count(), 1 + 4, "{}", csv.body);
    assert_eq!(csv.body, export.stdout, "same rows");
    assert!(serve.terminate(crate::common::SIGTERM_DEADLINE).is_some());
}

/// Headless Chromium on `url`: the DOM after the page's scripts ran.
fn chromium(args: &[&str], url: &str) -> String {
    let budget = format!(
        "--virtual-time-budget={}",
        crate::common::scaled(Duration::from_secs(10)).as_millis()
    );
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .args(["--window-size=1280,1300", &budget])
        .args(args)
        .arg(url)
        .output()
        .expect("chromium (the Debian package) is needed");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The opening tag of the element whose `id` is `id`.
fn tag<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the DOM:\n{dom}"));
    let start = dom[..at].rfind('<').unwrap();
    let end = at + dom[at..].find('>').unwrap();
    &dom[start..=end]
}

/// The HTML of the card of `role` on the rendered page.
fn card<'a>(dom: &'a str, role: &str) -> &'a str {
    let at = dom
        .find(&format!("data-role=\"{role}\""))
        .unwrap_or_else(|| panic!("no card for {role} in the DOM:\n{dom}"));
    let start = dom[..at].rfind('<').unwrap();
    let end = at + dom[at..].find("</div></div>").unwrap_or(dom.len() - at);
    &dom[start..end]
}

#[test]
fn the_dashboard_draws_seven_days_with_a_failing_sensor_in_headless_chromium() {
    let (s, port) = serving_setup();
    // seven days of simulated history, then the real (fake) bus with T2 failing
    s.run(&["simulate", "--count", "2016", "--interval", "5m"])
        .ok();
    s.bus().fault(IDS[1], Fault::CrcNo);
    let mut run = start(&s, port);
    // the missing alarm is on by default: raised by the third missing reading
    assert!(run.wait_for_line(Duration::from_secs(30), |l| l.contains("alarm raised: T2")));
    let url = format!("http://127.0.0.1:{port}/");
    let dom = chromium(&["--dump-dom"], &url);
    // the current values, and the failing sensor with its reason, styled apart
    let t1 = card(&dom, "T1");
    assert!(
        t1.contains("class=\"card ok\"") && t1.contains("70.00 °C"),
        "{t1}"
    );
    let t2 = card(&dom, "T2");
    assert!(t2.contains("class=\"card missing\""), "{t2}");
    assert!(t2.contains("crc_no") && t2.contains("CRC"), "{t2}");
    assert!(
        !t2.contains("°C"),
        "a missing reading shows no temperature: {t2}"
    );
    // effectiveness and LMTD need all four readings: shown as n/a, not 0
    assert!(
        dom.contains("id=\"effectiveness\" class=\"value\">n/a<"),
        "{dom}"
    );
    assert!(dom.contains("id=\"lmtd\" class=\"value\">n/a<"), "{dom}");
    // the history is mock: the banner shows though the newest sample is real
    let banner = tag(&dom, "mock-banner");
    assert!(!banner.contains("hidden"), "{banner}");
    // a drawn chart: uPlot's root and a canvas with a size
    let chart = &dom[dom.find("id=\"chart-temps\"").unwrap()..];
    assert!(chart.contains("class=\"uplot"), "no uPlot chart: {chart}");
    let canvas = &chart[chart.find("<canvas").expect("a canvas")..];
    let width: u32 = canvas
        .split("width=\"")
        .nth(1)
        .and_then(|w| w.split('"').next())
        .and_then(|w| w.parse().ok())
        .unwrap_or(0);
    assert!(width > 100, "canvas {canvas:.80}");
    // the alarm
    let alarms = &dom[dom.find("id=\"alarms\"").unwrap()..];
    let alarms = &alarms[..alarms.find("</ul>").unwrap()];
    assert!(
        alarms.contains("class=\"raised\"")
            && alarms.contains("missing T2: T2 missing for 3 readings"),
        "{alarms}"
    );
    assert!(
        tag(&dom, "error").contains("hidden"),
        "the page reported an error:\n{dom}"
    );
    let info = &dom[dom.find("id=\"window-info\"").unwrap()..];
    let info = &info[info.find('>').unwrap() + 1..info.find('<').unwrap()];
    assert!(
        info.ends_with(" samples") || info.contains(" samples, "),
        "{info}"
    );
    // the same run writes the README's screenshot
    let png = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png");
    chromium(&[&format!("--screenshot={}", png.display())], &url);
    let bytes = std::fs::read(&png).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
        "screenshot"
    );
    assert!(run.terminate(crate::common::SIGTERM_DEADLINE).is_some());
}

#[test]
fn a_real_prometheus_scrapes_hxlog_and_answers_a_query_for_t1() {
    let (s, port) = serving_setup();
    let mut run = start(&s, port);
    let prom_port = free_port();
    let config = s.write(
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: hxlog\n    static_configs:\n      - targets: [\"127.0.0.1:{port}\"]\n"
        ),
    );
    let mut prom = Running::spawn(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                s.dir().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}")),
    );
    let query = "/api/v1/query?query=hxlog_temperature_celsius%7Brole%3D%22T1%22%7D";
    let mut last = None;
    let answered = wait_until(Duration::from_secs(30), || {
        let Ok(a) = try_get(prom_port, query) else {
            return false;
        };
        let found = a.status == 200
            && a.json()["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty());
        last = Some(a);
        found
    });
    assert!(
        answered,
        "prometheus never had T1: {last:?}\n{:?}\nhxlog running: {}, its log: {:?}",
        prom.lines(),
        run.is_running(),
        run.lines()
    );
    let result = &last.unwrap().json()["data"]["result"][0];
    assert_eq!(result["metric"]["sensor_id"], json!(IDS[0]), "{result}");
    assert_eq!(result["value"][1], json!("70"), "{result}");
    assert!(prom.terminate(crate::common::SIGTERM_DEADLINE).is_some());
    assert!(run.terminate(crate::common::SIGTERM_DEADLINE).is_some());
}

/// The alarm messages the fake Web PubSub accepted, as `state alarm role`.
fn alarm_messages(srv: &crate::wps_server::TestServer) -> Vec<String> {
    srv.accepted_messages()
        .iter()
        .filter(|m| m["type"] == "hxlog.alarm")
        .map(|m| {
            format!(
                "{} {} {}",
                m["state"].as_str().unwrap(),
                m["alarm"].as_str().unwrap(),
                m["role"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_raised_while_web_pubsub_is_down_reach_it_later_in_order() {
    let srv =
        crate::wps_server::start("heatexchanger", "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ-9f3a=").await;
    srv.stop().await;
    let (mut s, port) = serving_setup();
    s.write(
        "secrets.json",
        &json!({"AZURE_WEBPUBSUB_CONNECTION_STRING": srv.connection_string()}).to_string(),
    );
    s.set("secrets", json!("secrets.json"));
    s.set("retry_max", json!("1s"));
    s.set(
        "alarms",
        json!({"roles": {"T1": {"max": 80.0}}, "missing_for": 2}),
    );
    let mut run = start(&s, port);
    // T2 fails: raised once after two missing readings
    s.bus().fault(IDS[1], Fault::CrcNo);
    assert!(
        run.wait_for_line(Duration::from_secs(30), |l| l.contains("WARN")
            && l.contains("alarm raised: T2 missing for 2 readings")),
        "{:?}",
        run.lines()
    );
    // T1 too hot, then T2 back
    s.bus().sensor(IDS[0], 85.0);
    assert!(run.wait_for_line(Duration::from_secs(30), |l| {
        l.contains("alarm raised: T1 above 80")
    }));
    let metrics = get(port, "/metrics").body;
    assert_eq!(
        metric(&metrics, "hxlog_alarm_active{alarm=\"max\",role=\"T1\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "hxlog_alarm_active{alarm=\"missing\",role=\"T2\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    s.bus().sensor(IDS[1], 50.0);
    assert!(
        run.wait_for_line(Duration::from_secs(30), |l| l.contains("INFO")
            && l.contains("alarm cleared: T2 reads again"))
    );
    let status = s.run(&["status"]);
    assert!(status.stdout.contains("alarm:    max T1"), "{status}");
    assert!(!status.stdout.contains("alarm:    missing T2"), "{status}");
    let raised = run
        .lines()
        .iter()
        .filter(|l| l.contains("alarm raised: T2"))
        .count();
    assert_eq!(raised, 1, "raised once, logged once");
    assert!(alarm_messages(&srv).is_empty());
    // the service comes back: the alarms arrive, in order
    srv.restart().await;
    let expected = ["raised missing T2", "raised max T1", "cleared missing T2"];
    let arrived = wait_until(Duration::from_secs(60), || alarm_messages(&srv).len() >= 3);
    assert!(arrived, "{:?}\n{:?}", alarm_messages(&srv), run.lines());
    assert_eq!(alarm_messages(&srv), expected);
    assert!(run.terminate(crate::common::SIGTERM_DEADLINE).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_whose_rule_was_removed_is_cleared_and_published() {
    let srv =
        crate::wps_server::start("heatexchanger", "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ-9f3a=").await;
    let mut s = Setup::new();
    s.healthy_bus([85.0, 50.0, 15.0, 35.0]);
    s.write(
        "secrets.json",
        &json!({"AZURE_WEBPUBSUB_CONNECTION_STRING": srv.connection_string()}).to_string(),
    );
    s.set("secrets", json!("secrets.json"));
    s.set("alarms", json!({"roles": {"T1": {"max": 80.0}}}));
    let out = s.run(&["sample"]);
    out.ok();
    assert!(out.stderr.contains("alarm raised: T1 above 80"), "{out}");
    assert!(s.run(&["status"]).ok().stdout.contains("alarm:    max T1"));
    // the rule goes from the config while T1 is still too hot: nothing would
    // ever evaluate the alarm again, so the next start clears it
    s.set("alarms", json!({}));
    let out = s.run(&["sample"]);
    out.ok();
    assert!(
        out.stderr
            .contains("alarm cleared: max T1: its rule was removed from the config"),
        "{out}"
    );
    let status = s.run(&["status"]);
    assert!(
        status.ok().stdout.contains("alarms:   none active"),
        "{status}"
    );
    let out = s.run(&["sample"]);
    assert!(
        !out.ok().stderr.contains("alarm cleared"),
        "cleared once: {out}"
    );
    // the clear is published like any other
    s.run(&["replay", "--give-up-after", "20s"]).ok();
    assert_eq!(
        alarm_messages(&srv),
        ["raised max T1", "cleared max T1"],
        "{:?}",
        srv.accepted_messages()
    );
}

#[test]
fn the_csv_download_of_100_000_rows_streams_exports_csv_byte_for_byte() {
    let s = Setup::new();
    s.healthy_bus([70.0, 50.0, 15.0, 35.0]);
    s.run(&["simulate", "--count", "100000", "--interval", "10s"])
        .ok();
    let since = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * 30)).to_string();
    let until = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60)).to_string();
    let port = free_port();
    let mut serve =
        Running::spawn(&mut s.cmd(&["serve", "--listen", &format!("127.0.0.1:{port}")]));
    assert!(
        wait_serving(port, Duration::from_secs(30)),
        "{:?}",
        serve.lines()
    );
    let csv = get(
        port,
        &format!("/api/export.csv?since={since}&until={until}"),
    );
    assert_eq!(csv.status, 200, "{:?}", &csv.headers);
    assert_eq!(
        csv.header("transfer-encoding"),
        Some("chunked"),
        "not streamed"
    );
    let export = s.run(&["export", "--since", &since, "--until", &until]);
    export.ok();
    assert_eq!(export.stdout.lines().count(), 1 + 100_000);
    assert!(
        csv.body == export.stdout,
        "the download differs from export"
    );
    // one more sample makes it more than the download allows
    s.run(&["sample"]).ok();
    let refused = get(
        port,
        &format!("/api/export.csv?since={since}&until={until}"),
    );
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(refused.body.contains("more than 100000"), "{refused:?}");
    assert!(serve.terminate(crate::common::SIGTERM_DEADLINE).is_some());
}

/// Sockets `pid` holds open.
fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|l| l.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn idle_connections_are_capped_and_closed_while_the_dashboard_answers_and_sampling_goes_on() {
    use std::io::Read;
    let (s, port) = serving_setup();
    let run = start(&s, port);
    assert!(wait_until(Duration::from_secs(30), || samples_logged(&run) >= 1));
    let before = samples_logged(&run);
    // more idle connections than hxlog keeps open (64): none sends a byte
    let idle: Vec<std::net::TcpStream> = (0..80)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let mut most = 0;
    assert!(
        wait_until(Duration::from_secs(60), || {
            most = most.max(sockets(run.pid()));
            try_get(port, "/").is_ok_and(|a| a.status == 200)
        }),
        "the dashboard never answered beside 80 idle connections"
    );
    most = most.max(sockets(run.pid()));
    // 64 connections, the listener, and a few of its own (notify, logs)
    assert!(most <= 64 + 8, "hxlog held {most} sockets at once");
    // hxlog closes an idle connection that sends no request (10 s)
    let mut first = idle.into_iter().next().unwrap();
    first
        .set_read_timeout(Some(crate::common::scaled(Duration::from_secs(60))))
        .unwrap();
    let mut buf = [0u8; 1];
    assert!(
        matches!(first.read(&mut buf), Ok(0)),
        "an idle connection was never closed"
    );
    assert!(wait_until(Duration::from_secs(30), || samples_logged(&run)
        >= before + 3));
    let mut run = run;
    assert!(run.terminate(crate::common::SIGTERM_DEADLINE).is_some());
}

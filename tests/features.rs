//! Gherkin acceptance scenarios (`tests/features/*.feature`) in the words an
//! engineer uses, as the old Python tool had with pytest-bdd. Every step
//! drives the built `hxlog` binary against a fake w1 sysfs tree in the
//! scenario's own folder; an unmatched step fails the run (`fail_on_skipped`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use cucumber::{World, given, then, when};
use hxlog_test_support::*;
use serde_json::{Value, json};

/// One scenario's state.
#[derive(Debug, Default, World)]
pub struct Hx {
    /// The scenario's folder, config and mapping.
    setup: Option<Setup>,
    /// The fake bus, once created.
    bus: Option<FakeBus>,
    /// The temperature each healthy role was given, °C.
    temps: BTreeMap<String, f64>,
    /// Extra environment for every command.
    env: Vec<(String, String)>,
    /// The last finished command.
    last: Option<Outcome>,
    /// A running `hxlog run`.
    running: Option<Running>,
    /// Files a step promised not to touch, with their bytes.
    guarded: Vec<(PathBuf, Vec<u8>)>,
    /// Outbox size when something changed (e.g. a sensor was unplugged).
    mark: u64,
}

impl Hx {
    fn setup(&self) -> &Setup {
        self.setup
            .as_ref()
            .expect("no logger folder: start with a Given")
    }

    fn setup_mut(&mut self) -> &mut Setup {
        self.setup.get_or_insert_with(Setup::new)
    }

    fn bus(&self) -> &FakeBus {
        self.bus.as_ref().expect("no 1-Wire bus in this scenario")
    }

    fn id(role: &str) -> &'static str {
        let i = ROLES
            .iter()
            .position(|r| *r == role)
            .unwrap_or_else(|| panic!("unknown role {role}"));
        IDS[i]
    }

    /// Runs hxlog with the scenario's config and environment.
    fn hxlog(&mut self, args: &[&str]) -> &Outcome {
        let mut cmd = self.setup().cmd(args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.last = Some(output(&mut cmd));
        self.last.as_ref().unwrap()
    }

    fn last(&self) -> &Outcome {
        self.last.as_ref().expect("no command has run yet")
    }

    fn last_json(&self) -> Value {
        let out = self.last();
        out.ok();
        serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// The newest sample in the outbox, as `export --format jsonl` gives it.
    fn newest(&mut self) -> Value {
        let out = self.hxlog(&["export", "--since", "1d", "--format", "jsonl"]);
        out.ok();
        let line = out.stdout.lines().last().expect("no sample exported");
        serde_json::from_str(line).unwrap()
    }

    fn file(&self, name: &str) -> PathBuf {
        match name {
            "hxlog.json" => self.setup().config_path(),
            "devicenames.json" => self.setup().devicenames_path(),
            "the outbox" => self.setup().outbox_path(),
            other => self.setup().dir().join(other),
        }
    }
}

/// The roles named in "T1, T3 and T4".
fn roles(list: &str) -> Vec<String> {
    list.split([',', ' '])
        .filter(|w| w.starts_with('T') && w.len() > 1)
        .map(String::from)
        .collect()
}

// ---- Given ---------------------------------------------------------------

#[given("a heat exchanger with sensors T1 to T4 on the 1-Wire bus")]
fn healthy_exchanger(w: &mut Hx) {
    let temps = [62.5, 41.0625, -0.3125, 35.75];
    let setup = w.setup_mut();
    let bus = setup.healthy_bus(temps);
    for (role, t) in ROLES.iter().zip(temps) {
        w.temps.insert(role.to_string(), t);
    }
    assert_eq!(std::fs::read_dir(bus.root()).unwrap().count(), 5);
    w.bus = Some(bus);
}

#[given("a logger folder without a 1-Wire bus")]
fn no_bus(w: &mut Hx) {
    let setup = w.setup_mut();
    setup.set("sensor_source", json!("auto"));
    assert!(!setup.w1_root().exists());
}

#[given(regex = r#"^the sensor source is "(auto|w1|mock)"$"#)]
fn sensor_source(w: &mut Hx, source: String) {
    w.setup_mut().set("sensor_source", json!(source));
    let text = std::fs::read_to_string(w.setup().config_path()).unwrap();
    assert!(text.contains(&format!("\"{source}\"")), "{text}");
}

#[given(regex = r#"^USE_MOCK_SENSORS is set to "(\w+)"$"#)]
fn use_mock(w: &mut Hx, value: String) {
    w.env.push(("USE_MOCK_SENSORS".into(), value));
}

#[given(regex = r"^the kernel reports a CRC error for (T\d)$")]
fn crc_error(w: &mut Hx, role: String) {
    fault(w, role, "crc_no".into());
}

#[given(regex = r#"^(T\d) has the fault "(\w+)"$"#)]
fn fault(w: &mut Hx, role: String, code: String) {
    let fault = Fault::from_code(&code).unwrap_or_else(|| panic!("unknown fault {code}"));
    w.bus().fault(Hx::id(&role), fault);
    w.temps.remove(&role);
    let path = w.bus().w1_slave_path(Hx::id(&role));
    match fault.w1_slave() {
        Some(text) => assert_eq!(std::fs::read_to_string(path).unwrap(), text),
        None => assert!(!path.exists()),
    }
}

#[given(regex = r"^(T\d) reads a genuine 85.0 °C$")]
fn genuine_85(w: &mut Hx, role: String) {
    w.bus().sensor(Hx::id(&role), 85.0);
    w.temps.insert(role.clone(), 85.0);
    let text = std::fs::read_to_string(w.bus().w1_slave_path(Hx::id(&role))).unwrap();
    // Byte 6 is not the power-on 0c.
    assert!(text.starts_with("50 05 4b 46 7f ff 10 "), "{text}");
}

#[given(regex = r"^(T\d) reports the power-on value 85.0 °C$")]
fn power_on_85(w: &mut Hx, role: String) {
    fault(w, role.clone(), "power_on_reset".into());
    let text = std::fs::read_to_string(w.bus().w1_slave_path(Hx::id(&role))).unwrap();
    assert!(text.contains("t=85000"), "{text}");
}

#[given(regex = r"^(T\d) is not plugged in$")]
fn not_plugged(w: &mut Hx, role: String) {
    w.bus().remove(Hx::id(&role));
    w.temps.remove(&role);
    assert!(!w.bus().sensor_dir(Hx::id(&role)).exists());
}

#[given(regex = r"^(\S+) has a trailing comma on line 3$")]
fn trailing_comma(w: &mut Hx, name: String) {
    let text = match name.as_str() {
        "hxlog.json" => "{\n  \"device_id\": \"hx-01\",\n}\n",
        "devicenames.json" => "{\n  \"T1\": \"28-0316a2790a01\",\n}\n",
        "secrets.json" => "{\n  \"PG_DB_NAME\": \"hx\",\n}\n",
        other => panic!("no broken text for {other}"),
    };
    if name == "secrets.json" {
        w.setup_mut().set("secrets", json!("secrets.json"));
    }
    let path = w.file(&name);
    std::fs::write(&path, text).unwrap();
    w.guarded.push((path, text.as_bytes().to_vec()));
}

#[given(regex = r"^(\d+) simulated samples (\d+) minutes? apart$")]
fn simulated(w: &mut Hx, count: u32, minutes: u32) {
    w.setup_mut();
    let out = w.hxlog(&[
        "simulate",
        "--count",
        &count.to_string(),
        "--interval",
        &format!("{minutes}m"),
    ]);
    out.ok();
    assert!(
        out.stdout.contains(&format!("wrote {count} mock samples")),
        "{out}"
    );
}

#[given("garbage in the outbox")]
fn garbage_outbox(w: &mut Hx) {
    let path = w.setup_mut().outbox_path();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let bytes = b"\x00\x01 not an SQLite file \xff\xfe garbage".to_vec();
    std::fs::write(&path, &bytes).unwrap();
    w.guarded.push((path, bytes));
}

#[given("the logger is running")]
fn logger_running(w: &mut Hx) {
    let mut cmd = w.setup().cmd(&["run"]);
    for (k, v) in &w.env {
        cmd.env(k, v);
    }
    let mut running = Running::spawn(&mut cmd);
    assert!(running.is_running(), "{:?}", running.lines());
    w.running = Some(running);
}

#[given(regex = r"^at least (\d+) samples have been recorded$")]
fn at_least_samples(w: &mut Hx, n: u64) {
    let setup = w.setup();
    let ok = wait_until(Duration::from_secs(30), || {
        setup.outbox_path().exists() && setup.sample_count() >= n
    });
    assert!(
        ok,
        "fewer than {n} samples: {:#?}",
        w.running.as_ref().map(|r| r.lines())
    );
}

// ---- When ----------------------------------------------------------------

#[when("I take one sample")]
fn take_sample(w: &mut Hx) {
    w.hxlog(&["sample"]);
}

#[when("I take one sample as JSON")]
fn take_sample_json(w: &mut Hx) {
    w.hxlog(&["sample", "--json"]);
}

#[when("I ask for the status")]
fn ask_status(w: &mut Hx) {
    w.hxlog(&["status"]);
}

#[when("I list the sensors")]
fn list_sensors(w: &mut Hx) {
    w.hxlog(&["sensors"]);
}

#[when(regex = r"^I export since (\S+) as (CSV|JSON lines)$")]
fn export(w: &mut Hx, since: String, format: String) {
    let format = if format == "CSV" { "csv" } else { "jsonl" };
    w.hxlog(&["export", "--since", &since, "--format", format]);
}

#[when(regex = r"^I export since (\S+) until the (\d+)(?:st|nd|rd|th) sample as CSV$")]
fn export_until(w: &mut Hx, since: String, n: usize) {
    let all = w.setup().export_csv(&["--since", "2000-01-01"]);
    let until = all.rows[n - 1]["taken_at"].clone();
    w.hxlog(&["export", "--since", &since, "--until", &until]);
}

#[when(regex = r"^(T\d) is unplugged$")]
fn unplug(w: &mut Hx, role: String) {
    w.mark = w.setup().sample_count();
    not_plugged(w, role);
}

#[when("the logger is stopped with SIGTERM")]
fn stop_logger(w: &mut Hx) {
    let running = w.running.as_mut().expect("the logger is not running");
    let status = running.terminate(hxlog_test_support::SIGTERM_DEADLINE);
    let status = status.unwrap_or_else(|| {
        panic!(
            "still running {:?} after SIGTERM",
            hxlog_test_support::SIGTERM_DEADLINE
        )
    });
    w.last = Some(Outcome {
        code: status.code(),
        stdout: String::new(),
        stderr: running.lines().join("\n"),
    });
}

// ---- Then ----------------------------------------------------------------

#[then(regex = r#"^(T\d) is recorded as missing with quality "(\w+)"$"#)]
fn recorded_missing(w: &mut Hx, role: String, code: String) {
    w.last().ok();
    let s = w.newest();
    let r = reading(&s, &role);
    assert_eq!(r["quality"], code.as_str(), "{s}");
    assert_eq!(
        r["celsius"],
        Value::Null,
        "a missing reading has no number: {s}"
    );
    let csv = w.setup().export_csv(&["--since", "1d"]);
    let row = csv.last();
    assert_eq!(row[&role], "", "{role} cell must be empty: {row:?}");
    assert_eq!(row[&format!("{role}_quality")], code);
}

#[then(regex = r"^the reason for (T\d) names its (w1_slave file|sensor folder)$")]
fn reason_names(w: &mut Hx, role: String, what: String) {
    let s = w.newest();
    let reason = reading(&s, &role)["reason"].as_str().unwrap().to_string();
    let id = Hx::id(&role);
    let path = if what == "w1_slave file" {
        w.bus().w1_slave_path(id)
    } else {
        w.bus().sensor_dir(id)
    };
    assert!(
        reason.contains(&path.display().to_string()),
        "{reason:?} does not name {}",
        path.display()
    );
}

#[then(
    regex = r"^(T\d(?:, T\d)*(?: and T\d)?) (?:are|is) recorded with (?:their|its) temperatures?$"
)]
fn recorded_ok(w: &mut Hx, list: String) {
    let s = w.newest();
    for role in roles(&list) {
        let want = w.temps[&role];
        let r = reading(&s, &role);
        assert_eq!(r["quality"], "ok", "{s}");
        assert_eq!(r["celsius"], json!(want), "{role}: {s}");
    }
}

#[then(regex = r"^(T\d) is recorded as ([-\d.]+) °C$")]
fn recorded_as(w: &mut Hx, role: String, celsius: f64) {
    let s = w.newest();
    assert_eq!(reading(&s, &role)["celsius"], json!(celsius), "{s}");
    assert_eq!(reading(&s, &role)["quality"], "ok", "{s}");
}

#[then("the printed sample is marked [MOCK]")]
fn printed_mock(w: &mut Hx) {
    let out = w.last();
    out.ok();
    assert!(out.stdout.contains("[MOCK]"), "{out}");
}

#[then(regex = r#"^the JSON says mock is (true|false)$"#)]
fn json_mock(w: &mut Hx, value: String) {
    let v = w.last_json();
    assert_eq!(v["mock"], json!(value == "true"), "{v}");
}

#[then(regex = r#"^the sample's source is "(\w+)"$"#)]
fn sample_source(w: &mut Hx, source: String) {
    w.last().ok();
    let s = w.newest();
    assert_eq!(s["source"], source.as_str(), "{s}");
    assert_eq!(s["mock"], json!(source == "mock"), "{s}");
}

#[then(regex = r#"^every exported row has source "(\w+)"$"#)]
fn every_row_source(w: &mut Hx, source: String) {
    let out = w.last();
    out.ok();
    let csv = Csv::parse(&out.stdout);
    assert!(!csv.rows.is_empty(), "{out}");
    for row in &csv.rows {
        assert_eq!(row["source"], source, "{row:?}");
    }
}

#[then("the status says MOCK")]
fn status_mock(w: &mut Hx) {
    let out = w.last();
    out.ok();
    assert!(out.stdout.contains("[MOCK]"), "{out}");
    assert!(out.stdout.contains("MOCK"), "{out}");
}

#[then(regex = r"^it fails naming (\S+) at line (\d+), column (\d+)$")]
fn fails_naming_at(w: &mut Hx, name: String, line: u32, column: u32) {
    let out = w.last();
    out.failed();
    let at = format!("{}:{line}:{column}", w.file(&name).display());
    assert!(out.stderr.contains(&at), "no {at}: {out}");
    assert!(
        out.stderr
            .contains(&format!("line {line}, column {column}")),
        "{out}"
    );
}

#[then("it fails naming the outbox")]
fn fails_naming_outbox(w: &mut Hx) {
    let out = w.last();
    out.failed();
    let path = w.setup().outbox_path().display().to_string();
    assert!(out.stderr.contains(&path), "{out}");
    assert_eq!(out.stdout, "", "{out}");
}

#[then(regex = r"^(\S+|the outbox) is unchanged(?: byte for byte)?$")]
fn unchanged(w: &mut Hx, name: String) {
    let path = w.file(&name);
    let (_, before) = w
        .guarded
        .iter()
        .find(|(p, _)| *p == path)
        .unwrap_or_else(|| panic!("{} was not recorded", path.display()));
    assert_eq!(
        &std::fs::read(&path).unwrap(),
        before,
        "{} changed",
        path.display()
    );
}

#[then("no outbox was created")]
fn no_outbox(w: &mut Hx) {
    assert!(!w.setup().outbox_path().exists());
}

#[then(regex = r"^(\d+) rows are exported$")]
fn n_rows(w: &mut Hx, n: usize) {
    let out = w.last();
    out.ok();
    let count = if out.stdout.starts_with("taken_at,") {
        Csv::parse(&out.stdout).rows.len()
    } else {
        out.stdout.lines().count()
    };
    assert_eq!(count, n, "{out}");
}

#[then(regex = r"^the rows are oldest first, (\d+) minutes? apart$")]
fn oldest_first(w: &mut Hx, minutes: i64) {
    let out = w.last();
    let times: Vec<jiff::Timestamp> = if out.stdout.starts_with("taken_at,") {
        Csv::parse(&out.stdout)
            .rows
            .iter()
            .map(|r| r["taken_at"].parse().unwrap())
            .collect()
    } else {
        out.stdout
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                v["taken_at"].as_str().unwrap().parse().unwrap()
            })
            .collect()
    };
    assert!(times.len() > 1, "{out}");
    for pair in times.windows(2) {
        assert_eq!(
            pair[1].duration_since(pair[0]).as_secs(),
            minutes * 60,
            "{out}"
        );
    }
}

#[then("the newest exported sample is the newest stored")]
fn newest_is_newest(w: &mut Hx) {
    let out = w.last().clone();
    let st = w.setup().status_json();
    let newest = st["outbox"]["newest"].as_str().unwrap().to_string();
    let last_line = out.stdout.lines().last().unwrap().to_string();
    assert!(last_line.contains(&newest), "{newest} vs {last_line}");
}

#[then(regex = r#"^(T\d) is soon recorded as missing with quality "(\w+)"$"#)]
fn soon_missing(w: &mut Hx, role: String, code: String) {
    let setup = w.setup();
    let mut last = Value::Null;
    let ok = wait_until(Duration::from_secs(30), || {
        last = setup.status_json()["last_sample"].clone();
        reading(&last, &role)["quality"] == code.as_str()
    });
    assert!(ok, "{role} not {code} in time; last sample {last}");
    assert_eq!(reading(&last, &role)["celsius"], Value::Null);
}

#[then(regex = r"^the logger keeps recording (T\d(?:, T\d)*(?: and T\d)?)$")]
fn keeps_recording(w: &mut Hx, list: String) {
    let setup = w.setup();
    let target = w.mark + 3;
    assert!(
        wait_until(Duration::from_secs(30), || setup.sample_count() >= target),
        "the loop stopped: {:#?}",
        w.running.as_ref().map(|r| r.lines())
    );
    let last = setup.status_json()["last_sample"].clone();
    for role in roles(&list) {
        let r = reading(&last, &role);
        assert_eq!(r["quality"], "ok", "{last}");
        assert_eq!(r["celsius"], json!(w.temps[&role]), "{last}");
    }
}

#[then("it exits cleanly")]
fn exits_cleanly(w: &mut Hx) {
    let out = w.last();
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains("stopped"), "{out}");
}

fn sample_lines(w: &Hx) -> Vec<String> {
    w.last()
        .stderr
        .lines()
        .filter(|l| l.contains(" sample ") && l.contains("seq="))
        .map(String::from)
        .collect()
}

#[then("every sample in the outbox was logged")]
fn every_sample_logged(w: &mut Hx) {
    let logged = sample_lines(w);
    assert_eq!(
        w.setup().sample_count() as usize,
        logged.len(),
        "{logged:#?}"
    );
}

#[then(regex = r#"^every logged sample line says "([^"]+)"$"#)]
fn every_line_says(w: &mut Hx, marker: String) {
    let logged = sample_lines(w);
    assert!(!logged.is_empty());
    assert!(logged.iter().all(|l| l.contains(&marker)), "{logged:#?}");
}

#[then(
    regex = r"^the sensor list shows (T\d) as missing and warns about the phantom (00-[0-9a-f]+)$"
)]
fn sensors_show(w: &mut Hx, role: String, phantom: String) {
    let out = w.last();
    assert_eq!(out.code, Some(1), "bus trouble must exit 1: {out}");
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains(Hx::id(&role)))
        .unwrap_or_else(|| panic!("{role} not listed: {out}"));
    assert!(line.contains(&role) && line.contains("not_found"), "{line}");
    assert!(
        out.stdout.contains(&phantom) && out.stdout.contains("phantom"),
        "{out}"
    );
}

#[given(regex = r"^a phantom device (00-[0-9a-f]+) on the bus$")]
fn phantom(w: &mut Hx, id: String) {
    w.bus().phantom(&id);
    assert!(w.bus().sensor_dir(&id).is_dir());
}

#[tokio::main]
async fn main() {
    Hx::cucumber()
        .fail_on_skipped()
        .run_and_exit("tests/features")
        .await;
}

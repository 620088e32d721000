//! The local half end to end: sensors (fake w1 sysfs trees) → outbox →
//! `sample`, `run`, `export`, `status`, `sensors`, `simulate`, and the
//! failures a user can cause (bad JSON, a garbage outbox, an unwritable data folder).

use hxlog_test_support::SpawnGuarded;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;

/// Four temperatures that need the scratchpad bytes, not the truncated `t=`
/// (−0.3125 °C has t=-312).
const TEMPS: [f64; 4] = [75.5625, 45.25, -0.3125, 30.125];

#[test]
fn mock_sample_in_a_fresh_folder_is_marked_mock_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let in_dir = |args: &[&str]| {
        let mut cmd = hxlog();
        cmd.current_dir(dir.path())
            .env("USE_MOCK_SENSORS", "true")
            .args(args);
        output(&mut cmd)
    };
    let out = in_dir(&["sample"]);
    out.ok();
    assert!(out.stdout.contains("[MOCK]"), "{out}");
    assert!(
        dir.path().join("hxlog-data/outbox.sqlite").is_file(),
        "no outbox under ./hxlog-data: {out}"
    );

    let out = in_dir(&["sample", "--json"]);
    out.ok();
    let sample: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(sample["mock"], json!(true), "{sample}");
    assert_eq!(sample["source"], "mock", "{sample}");

    let out = in_dir(&["export", "--since", "1h"]);
    out.ok();
    let csv = Csv::parse(&out.stdout);
    assert_eq!(csv.rows.len(), 2, "{out}");
    for row in &csv.rows {
        assert_eq!(row["source"], "mock", "{row:?}");
        for role in ROLES {
            assert_eq!(row[&format!("{role}_quality")], "ok", "{row:?}");
            num(row, role);
        }
    }

    let out = in_dir(&["status"]);
    out.ok();
    assert!(out.stdout.contains("MOCK"), "{out}");
}

#[test]
fn healthy_bus_exports_exact_values_and_effectiveness() {
    let setup = Setup::new();
    setup.healthy_bus(TEMPS);
    let out = setup.run(&["sample"]);
    out.ok();
    assert!(!out.stdout.contains("MOCK"), "{out}");
    assert!(out.stdout.contains("T3=-0.31°C"), "{out}");

    let csv = setup.export_csv(&["--since", "1h"]);
    assert_eq!(
        &csv.header[..7],
        ["taken_at", "device_id", "source", "T1", "T2", "T3", "T4"]
    );
    assert_eq!(
        csv.header[csv.header.len() - 3..],
        ["sample_id", "clock", "taken_at_raw"]
    );
    for role in ROLES {
        assert!(csv.header.contains(&format!("{role}_quality")));
        assert!(csv.header.contains(&format!("{role}_reason")));
    }
    assert_eq!(csv.rows.len(), 1);
    let row = csv.last();
    assert_eq!(row["source"], "w1");
    assert_eq!(row["device_id"], "e2e-hx");
    let taken: jiff::Timestamp = row["taken_at"].parse().expect("RFC 3339 taken_at");
    assert!(
        row["taken_at"].ends_with('Z'),
        "not UTC: {}",
        row["taken_at"]
    );
    assert!(jiff::Timestamp::now().duration_since(taken).as_secs().abs() < 600);
    for (role, t) in ROLES.iter().zip(TEMPS) {
        assert_eq!(num(row, role), t, "{role}");
        assert_eq!(row[&format!("{role}_quality")], "ok");
        assert_eq!(row[&format!("{role}_reason")], "");
    }
    let (eff, hot, cold, lmtd) = expected_efficiency(TEMPS);
    for (column, want) in [
        ("effectiveness", eff),
        ("hot_effectiveness", hot),
        ("cold_effectiveness", cold),
        ("lmtd_k", lmtd),
    ] {
        let got = num(row, column);
        assert!((got - want).abs() < 1e-9, "{column}: {got} vs {want}");
    }
}

#[test]
fn every_fault_is_a_missing_reading_with_its_code_and_file() {
    let setup = Setup::new();
    let bus = setup.bus();
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (i, fault) in Fault::ALL.into_iter().enumerate() {
        let id = format!("28-00000000f{i:03x}");
        bus.fault(&id, fault);
        pairs.push((fault.code().to_string(), id));
    }
    // A genuine 85.0 °C (byte 6 is not 0x0c) is a valid reading.
    bus.sensor("28-0000000085aa", 85.0);
    pairs.push(("genuine85".into(), "28-0000000085aa".into()));
    let refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(r, i)| (r.as_str(), i.as_str()))
        .collect();
    setup.mapping(&refs);

    let out = setup.run(&["sample", "--json"]);
    out.ok();
    let sample: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(sample["source"], "w1");

    let csv = setup.export_csv(&["--since", "1h"]);
    let row = csv.last();
    for fault in Fault::ALL {
        let role = fault.code();
        let id = &pairs.iter().find(|(r, _)| r == role).unwrap().1;
        assert_eq!(
            row[role], "",
            "{role}: a failed reading must be an empty cell"
        );
        assert_eq!(row[&format!("{role}_quality")], fault.code());
        let reason = &row[&format!("{role}_reason")];
        let file = if fault == Fault::NotFound {
            bus.sensor_dir(id)
        } else {
            bus.w1_slave_path(id)
        };
        assert!(
            reason.contains(&file.display().to_string()),
            "{role}: reason {reason:?} does not name {}",
            file.display()
        );
        let json = reading(&sample, role);
        assert_eq!(json["celsius"], Value::Null, "{json}");
        assert_eq!(json["quality"], fault.code(), "{json}");
    }
    assert_eq!(num(row, "genuine85"), 85.0);
    assert_eq!(row["genuine85_quality"], "ok");
    assert_eq!(reading(&sample, "genuine85")["celsius"], json!(85.0));
    // The one-line summary says missing, with the code, for every fault.
    for fault in Fault::ALL {
        let shown = format!("{}=missing({})", fault.code(), fault.code());
        let text = setup.run(&["sample"]);
        assert!(text.ok().stdout.contains(&shown), "{shown}: {text}");
    }
}

#[test]
fn run_samples_until_sigterm_and_records_an_unplugged_sensor() {
    let setup = Setup::new();
    let bus = setup.healthy_bus(TEMPS);
    let mut run = Running::spawn(&mut setup.cmd(&["run"]));
    let deadline = Duration::from_secs(30);

    assert!(
        wait_until(deadline, || setup.outbox_path().exists()
            && setup.sample_count() >= 3),
        "fewer than 3 samples within {deadline:?}: {:#?}",
        run.lines()
    );
    assert!(run.is_running());

    bus.remove(IDS[1]);
    let last_t2 = |setup: &Setup| {
        let st = setup.status_json();
        let t2 = reading(&st["last_sample"], "T2").clone();
        (st["outbox"]["samples"].as_u64().unwrap(), t2)
    };
    let mut first_missing = 0;
    assert!(
        wait_until(deadline, || {
            let (n, t2) = last_t2(&setup);
            first_missing = n;
            t2["quality"] == "not_found"
        }),
        "T2 never recorded as not_found: {:#?}",
        run.lines()
    );
    // The loop keeps going after the failed read.
    assert!(
        wait_until(deadline, || setup.sample_count() >= first_missing + 2),
        "the loop stopped after a sensor vanished: {:#?}",
        run.lines()
    );

    let status = run
        .terminate(hxlog_test_support::SIGTERM_DEADLINE)
        .expect("hxlog run did not stop within SIGTERM_DEADLINE of SIGTERM");
    assert_eq!(status.code(), Some(0), "{:#?}", run.lines());

    let csv = setup.export_csv(&["--since", "1h"]);
    let lines = run.lines();
    let sample_lines = lines
        .iter()
        .filter(|l| l.contains(" sample ") && l.contains("seq="))
        .count();
    assert_eq!(
        csv.rows.len(),
        sample_lines,
        "outbox rows vs 'sample' log lines: {lines:#?}"
    );
    assert_eq!(setup.sample_count() as usize, csv.rows.len());

    let missing: Vec<_> = csv
        .rows
        .iter()
        .filter(|r| r["T2_quality"] == "not_found")
        .collect();
    assert!(missing.len() >= 2, "{:?}", csv.rows);
    for row in &missing {
        assert_eq!(row["T2"], "");
        assert_eq!(row["source"], "w1");
        for (role, t) in [("T1", TEMPS[0]), ("T3", TEMPS[2]), ("T4", TEMPS[3])] {
            assert_eq!(num(row, role), t, "{role} kept being recorded");
        }
    }
    // Once missing, missing: every row after the first not_found is not_found.
    let first = csv
        .rows
        .iter()
        .position(|r| r["T2_quality"] == "not_found")
        .unwrap();
    assert!(
        csv.rows[first..]
            .iter()
            .all(|r| r["T2_quality"] == "not_found")
    );
    assert!(csv.rows[..first].iter().all(|r| r["T2_quality"] == "ok"));
}

#[test]
fn malformed_json_names_file_line_and_column_and_destroys_nothing() {
    // config, devicenames.json, secrets.json: each with a trailing comma, found at 3:1.
    for (which, broken) in [
        ("config", "{\n  \"device_id\": \"x\",\n}\n"),
        ("devicenames", "{\n  \"T1\": \"28-0316a2790a01\",\n}\n"),
        ("secrets", "{\n  \"PG_DB_NAME\": \"hx\",\n}\n"),
    ] {
        let mut setup = Setup::new();
        setup.healthy_bus(TEMPS);
        let file = match which {
            "config" => setup.config_path(),
            "devicenames" => setup.devicenames_path(),
            _ => {
                let p = setup.write("secrets.json", "{}");
                setup.set("secrets", json!("secrets.json"));
                p
            }
        };
        std::fs::write(&file, broken).unwrap();
        let before = std::fs::read(&file).unwrap();
        // secrets are read by run and status; status fails before any outbox check.
        let out = setup.run(&["status"]);
        out.failed();
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let at = format!("{name}:3:1");
        assert!(out.stderr.contains(&at), "{which}: no {at} in {out}");
        assert!(out.stderr.contains("line 3, column 1"), "{which}: {out}");
        assert_eq!(
            std::fs::read(&file).unwrap(),
            before,
            "{which} was modified"
        );
        assert!(
            !setup.outbox_path().exists(),
            "{which}: an outbox was created"
        );
        if which != "secrets" {
            let out = setup.run(&["sample"]);
            out.failed();
            assert!(out.stderr.contains(&at), "{which}: {out}");
        }
    }
}

#[test]
fn garbage_outbox_is_an_error_and_stays_byte_for_byte() {
    for garbage in [
        b"this is not a database at all, just text\n".to_vec(),
        // A valid SQLite header followed by garbage pages.
        {
            let mut b = b"SQLite format 3\0".to_vec();
            b.extend((0..8192u32).map(|i| (i * 7 % 251) as u8));
            b
        },
    ] {
        let setup = Setup::new();
        setup.healthy_bus(TEMPS);
        std::fs::create_dir_all(setup.data_dir()).unwrap();
        std::fs::write(setup.outbox_path(), &garbage).unwrap();
        for args in [
            &["sample"][..],
            &["status"],
            &["status", "--json"],
            &["export", "--since", "1h"],
            &["simulate", "--count", "2"],
            &["run"],
        ] {
            let out = setup.run(args);
            out.failed();
            assert!(
                out.stderr
                    .contains(&setup.outbox_path().display().to_string()),
                "{args:?} does not name the outbox: {out}"
            );
            assert_eq!(
                std::fs::read(setup.outbox_path()).unwrap(),
                garbage,
                "{args:?} modified the outbox"
            );
        }
        let mut files: Vec<String> = std::fs::read_dir(setup.data_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files, ["outbox.sqlite"], "side files appeared");
    }
}

#[test]
fn export_windows_formats_and_output_file() {
    let setup = Setup::new();
    setup
        .run(&["simulate", "--count", "100", "--interval", "1m"])
        .ok();

    let all = setup.export_csv(&["--since", "2026-01-01"]);
    assert_eq!(all.rows.len(), 100);
    let times: Vec<jiff::Timestamp> = all
        .rows
        .iter()
        .map(|r| r["taken_at"].parse().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "not oldest first");
    for w in times.windows(2) {
        assert_eq!(w[1].duration_since(w[0]).as_secs(), 60);
    }
    assert!(all.rows.iter().all(|r| r["source"] == "mock"));

    let recent = setup.export_csv(&["--since", "30m"]);
    assert_eq!(recent.rows.len(), 30, "--since 30m");
    assert_eq!(recent.rows[..], all.rows[70..]);

    let until = all.rows[49]["taken_at"].clone();
    let window = setup.export_csv(&["--since", "2026-01-01", "--until", &until]);
    assert_eq!(window.rows.len(), 49, "--until is exclusive");
    assert_eq!(window.rows[..], all.rows[..49]);

    let out = setup.run(&["export", "--since", "90m", "--format", "jsonl"]);
    out.ok();
    let objects: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objects.len(), 90);
    for (o, row) in objects.iter().zip(&all.rows[10..]) {
        assert_eq!(o["mock"], json!(true));
        assert_eq!(o["source"], "mock");
        assert_eq!(o["id"].as_str().unwrap(), row["sample_id"]);
        assert_eq!(o["taken_at"].as_str().unwrap(), row["taken_at"]);
    }

    let file = setup.dir().join("out.csv");
    let out = setup.run(&["export", "--since", "1d", "-o", file.to_str().unwrap()]);
    out.ok();
    assert_eq!(out.stdout, "", "-o must not write to stdout");
    let from_file = Csv::parse(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(from_file.rows, all.rows);

    for bad in ["yesterday", "2026-13-45", "soon"] {
        let out = setup.run(&["export", "--since", bad]);
        out.failed();
        assert!(out.stderr.contains("--since"), "{bad}: {out}");
        assert!(out.stderr.contains(bad), "{bad}: {out}");
        assert_eq!(out.stdout, "", "{bad}: {out}");
    }
}

#[test]
fn sensors_lists_the_bus_with_phantoms_and_missing_sensors() {
    let setup = Setup::new();
    let bus = setup.healthy_bus(TEMPS);
    bus.remove(IDS[3]);
    bus.phantom("00-400000000000");
    bus.sensor("28-0000000000ee", 21.5); // on the bus, not mapped
    bus.ext_power(IDS[0], false);

    let out = setup.run(&["sensors"]);
    assert_eq!(out.code, Some(1), "{out}");
    for id in &IDS[..3] {
        assert!(out.stdout.contains(id), "{id}: {out}");
    }
    assert!(out.stdout.contains("-0.3125"), "{out}");
    assert!(out.stdout.contains("28-0000000000ee"), "{out}");
    assert!(out.stdout.contains("DS18B20"), "{out}");
    assert!(out.stdout.contains("parasite"), "{out}");
    let missing = out
        .stdout
        .lines()
        .find(|l| l.contains(IDS[3]))
        .unwrap_or_else(|| panic!("{} not listed: {out}", IDS[3]));
    assert!(
        missing.contains("T4") && missing.contains("not_found"),
        "{missing}"
    );
    assert!(out.stdout.contains("00-400000000000"), "{out}");
    assert!(out.stdout.contains("phantom"), "{out}");

    let out = setup.run(&["sensors", "--json"]);
    assert_eq!(out.code, Some(1), "{out}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["present"], json!(true));
    assert_eq!(v["phantoms"], json!(["00-400000000000"]));
    assert_eq!(v["missing_mapped"], json!([{"role": "T4", "id": IDS[3]}]));
    let sensors = v["sensors"].as_array().unwrap();
    assert_eq!(sensors.len(), 4, "{v}");
    let by_id = |id: &str| sensors.iter().find(|s| s["id"] == id).unwrap();
    assert_eq!(by_id(IDS[2])["celsius_raw"], json!(-0.3125));
    assert_eq!(by_id(IDS[2])["role"], "T3");
    assert_eq!(by_id(IDS[2])["quality"], "ok");
    assert_eq!(by_id(IDS[0])["ext_power"], json!(false));
    assert_eq!(by_id(IDS[0])["type"], "DS18B20");
    assert_eq!(by_id("28-0000000000ee")["role"], Value::Null);

    // A healthy bus exits 0.
    let healthy = Setup::new();
    healthy.healthy_bus(TEMPS);
    healthy.run(&["sensors"]).ok();

    // No bus at all with auto: say so, exit 1.
    let mut nobus = Setup::new();
    nobus.set("sensor_source", json!("auto"));
    for args in [&["sensors"][..], &["sensors", "--json"]] {
        let out = nobus.run(args);
        assert_eq!(out.code, Some(1), "{out}");
        let root = nobus.w1_root().display().to_string();
        assert!(
            out.all_output().contains(&root) && out.all_output().contains("no 1-Wire bus"),
            "{out}"
        );
    }
}

#[test]
fn auto_source_with_a_bus_never_falls_back_to_mock() {
    let mut setup = Setup::new();
    setup.set("sensor_source", json!("auto"));
    let bus = setup.healthy_bus(TEMPS);
    bus.remove(IDS[0]);
    let out = setup.run(&["sample", "--json"]);
    out.ok();
    let s: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(s["source"], "w1", "{s}");
    assert_eq!(s["mock"], json!(false), "{s}");
    assert_eq!(reading(&s, "T1")["quality"], "not_found");
    assert_eq!(reading(&s, "T1")["celsius"], Value::Null);
    assert_eq!(reading(&s, "T2")["celsius"], json!(TEMPS[1]));

    // auto with no bus is mock, and says so.
    let mut nobus = Setup::new();
    nobus.set("sensor_source", json!("auto"));
    let out = nobus.run(&["sample"]);
    out.ok();
    assert!(out.stdout.contains("[MOCK]"), "{out}");

    // USE_MOCK_SENSORS=false forces the real bus even without one: every
    // reading is missing (not_found), never simulated.
    let out = output(
        nobus
            .cmd(&["sample", "--json"])
            .env("USE_MOCK_SENSORS", "false"),
    );
    out.ok();
    let s: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(s["source"], "w1", "{out}");
    for role in ROLES {
        assert_eq!(reading(&s, role)["quality"], "not_found", "{out}");
    }
    // USE_MOCK_SENSORS=true beats sensor_source w1 on a real bus.
    let mut real = Setup::new();
    real.set("sensor_source", json!("w1"));
    real.healthy_bus(TEMPS);
    let out = output(real.cmd(&["sample"]).env("USE_MOCK_SENSORS", "true"));
    out.ok();
    assert!(out.stdout.contains("[MOCK]"), "{out}");
}

#[test]
fn sample_into_an_unwritable_data_folder_fails_clearly() {
    for data_dir in ["afile", "afile/data"] {
        let mut setup = Setup::new();
        setup.healthy_bus(TEMPS);
        let file = setup.write("afile", "not a folder\n");
        setup.set("data_dir", json!(data_dir));
        let out = setup.run(&["sample"]);
        out.failed();
        let folder = setup.dir().join(data_dir).display().to_string();
        assert!(out.stderr.contains(&folder), "{data_dir}: {out}");
        assert!(out.stderr.contains("data_dir"), "{data_dir}: {out}");
        assert_eq!(
            out.stdout, "",
            "{data_dir}: printed a sample it did not write"
        );
        assert_eq!(std::fs::read_to_string(file).unwrap(), "not a folder\n");
    }
}

#[test]
fn secrets_never_appear_and_world_readable_secrets_warn() {
    use std::os::unix::fs::PermissionsExt;
    const PASSWORD: &str = "Zq8-very-distinctive-pw-1f3a";
    const KEY: &str = "QWxhZGRpbjpvcGVuIHNlc2FtZQ-distinctive";
    let mut setup = Setup::new();
    setup.healthy_bus(TEMPS);
    let secrets = setup.write(
        "secrets.json",
        &json!({
            "PG_DB_HOST": "127.0.0.1",
            "PG_DB_NAME": "hx",
            "PG_DB_USER": "logger",
            "PG_DB_PASSWORD": PASSWORD,
            "AZURE_WEBPUBSUB_CONNECTION_STRING":
                format!("Endpoint=https://example.webpubsub.azure.com;AccessKey={KEY};Version=1.0;"),
        })
        .to_string(),
    );
    setup.set("secrets", json!("secrets.json"));
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o644)).unwrap();

    // `--help` is not checked here: secrets come only from secrets.json, which
    // `--help` never reads (no flag or environment variable carries one).
    let mut outputs = vec![setup.run(&["sample"])];
    outputs[0].ok();
    for args in [&["status"][..], &["status", "--json"]] {
        let out = setup.run(args);
        out.ok();
        assert!(
            out.stderr.contains("chmod 600"),
            "no chmod 600 warning for a 0644 secrets.json: {out}"
        );
        assert!(out.stderr.contains(&secrets.display().to_string()), "{out}");
        outputs.push(out);
    }
    for out in &outputs {
        let all = out.all_output();
        assert!(!all.contains(PASSWORD), "password leaked: {out}");
        assert!(!all.contains(KEY), "access key leaked: {out}");
    }

    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = setup.run(&["status"]);
    out.ok();
    assert!(!out.stderr.contains("chmod 600"), "{out}");
}

/// Starts `hxlog run` and returns as soon as its stderr shows the
/// "hxlog starting" line (read without any polling delay).
fn run_until_started(setup: &Setup) -> (hxlog_test_support::KillOnDrop, Vec<String>) {
    use std::io::{BufRead, BufReader};
    let mut child = setup
        .cmd(&["run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn_guarded();
    let mut lines = vec![];
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            panic!("hxlog run ended before starting: {lines:#?}");
        }
        let started = line.contains("hxlog starting");
        lines.push(line);
        if started {
            break;
        }
    }
    // Keep draining stderr so the process never blocks on a full pipe.
    std::thread::spawn(move || for _ in reader.lines() {});
    (child, lines)
}

#[test]
fn a_signal_right_after_start_is_a_clean_stop() {
    let mut setup = Setup::new();
    setup.set("sensor_source", json!("mock"));
    for (round, signal) in [libc::SIGTERM, libc::SIGINT]
        .into_iter()
        .cycle()
        .take(10)
        .enumerate()
    {
        let (mut child, lines) = run_until_started(&setup);
        send_signal(child.id(), signal);
        let status = wait_exit(&mut child, hxlog_test_support::SIGTERM_DEADLINE);
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let status = status.expect("did not stop within 5 s");
        assert_eq!(
            status.code(),
            Some(0),
            "round {round}: signal {signal} after 'hxlog starting' gave {status:?}: {lines:#?}"
        );
    }
}

#[test]
fn calibration_and_hxlog_config_env_apply() {
    let mut setup = Setup::new();
    setup.healthy_bus(TEMPS);
    // By role, and by sensor id (the id wins over the role).
    setup.set(
        "calibration",
        json!({"T1": 0.5, "T2": 1.0, IDS[1]: -0.25, "T3": 0.1}),
    );
    // HXLOG_CONFIG instead of --config; run from another folder.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = output(
        hxlog()
            .current_dir(elsewhere.path())
            .env("HXLOG_CONFIG", setup.config_path())
            .args(["sample", "--json"]),
    );
    out.ok();
    let s: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(reading(&s, "T1")["celsius"], json!(TEMPS[0] + 0.5));
    assert_eq!(reading(&s, "T2")["celsius"], json!(TEMPS[1] - 0.25));
    assert_eq!(reading(&s, "T3")["celsius"], json!(-0.2125));
    assert_eq!(reading(&s, "T4")["celsius"], json!(TEMPS[3]));
    // Relative paths resolved against the config's folder, not the working directory.
    assert!(setup.outbox_path().is_file());
    assert!(!elsewhere.path().join("data").exists());
}

#[test]
fn replay_without_a_sink_exits_2_and_keeps_the_samples() {
    let mut setup = Setup::new();
    setup.set("sensor_source", json!("mock"));
    setup.run(&["simulate", "--count", "3"]).ok();
    for args in [&["replay"][..], &["replay", "--since", "1d"]] {
        let out = setup.run(args);
        assert_eq!(out.code, Some(2), "{args:?}: {out}");
        assert!(out.stderr.contains("no sink configured"), "{args:?}: {out}");
    }
    assert_eq!(setup.sample_count(), 3);
}

#[test]
fn mixing_mock_and_real_samples_in_one_outbox_warns() {
    let mut setup = Setup::new();
    setup.healthy_bus([60.0, 40.0, 20.0, 35.0]);
    let first = setup.run(&["sample"]);
    first.ok();
    assert!(!first.stderr.contains("already holds"), "{first}");
    setup.set("sensor_source", json!("mock"));
    let mixed = setup.run(&["sample"]);
    mixed.ok();
    assert!(
        mixed.stderr.contains("WARN")
            && mixed
                .stderr
                .contains("already holds w1 samples and this run writes mock samples"),
        "{mixed}"
    );
    // the same source again: no warning
    let again = setup.run(&["sample"]);
    again.ok();
    assert!(!again.stderr.contains("already holds"), "{again}");
}

//! Hardening (issue 9): what an operator or a bad config file can do to the
//! logger, end to end through the built binary. A config value out of range is
//! refused at load with the file named, never a panic later.

use hxlog_test_support::SpawnGuarded;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;

use crate::common::{Outcome, Running, Setup, send_signal, wait_exit, wait_until};
use crate::pg::TestDb;

/// Runs `hxlog ARGS` in `setup` until it exits by itself within `deadline`
/// (killed and reported otherwise).
fn run_to_exit(setup: &Setup, args: &[&str], deadline: Duration) -> Outcome {
    let (out, err) = (
        setup.dir().join("stdout.txt"),
        setup.dir().join("stderr.txt"),
    );
    let mut child = setup
        .cmd(args)
        .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err).unwrap()))
        .spawn_guarded();
    let status = wait_exit(&mut child, deadline);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let outcome = Outcome {
        code: status.and_then(|s| s.code()),
        stdout: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
    };
    assert!(
        status.is_some(),
        "hxlog {args:?} still running after {deadline:?}:\n{outcome}"
    );
    outcome
}

#[test]
fn an_absurd_retention_is_refused_at_start_not_a_panic_at_the_first_prune() {
    let mut setup = Setup::new();
    setup.healthy_bus([60.0, 40.0, 10.0, 30.0]);
    setup.set("retention", json!("5000000d"));
    let out = run_to_exit(&setup, &["run"], Duration::from_secs(30));
    out.failed();
    assert_eq!(out.code, Some(1), "{out}");
    assert!(!out.stderr.contains("panicked"), "{out}");
    assert!(
        out.stderr.contains("hxlog.json")
            && out.stderr.contains("\"retention\" is \"5000000d\"")
            && out.stderr.contains("between 1h and 3650d"),
        "{out}"
    );
    // the longest allowed retention prunes (at start) without trouble
    setup.set("retention", json!("3650d"));
    let mut run = Running::spawn(&mut setup.cmd(&["run"]));
    assert!(
        run.wait_for_line(Duration::from_secs(20), |l| l.contains("sample ")),
        "no sample: {run:?} {:#?}",
        run.lines()
    );
    let status = run
        .terminate(hxlog_test_support::SIGTERM_DEADLINE)
        .expect("run stops");
    assert!(status.success(), "{status:?}: {:#?}", run.lines());
}

/// `hxlog run` on a healthy fake bus with the Postgres sink, after its first sample.
fn running_logger(setup: &mut Setup, db: &TestDb) -> Running {
    setup.healthy_bus([60.0, 40.0, 10.0, 30.0]);
    db.write_secrets(setup.dir(), None, &[]);
    setup.set("secrets", json!("secrets.json"));
    let run = Running::spawn(&mut setup.cmd(&["run"]));
    assert!(
        run.wait_for_line(Duration::from_secs(30), |l| l.contains("sample ")),
        "run took no sample: {:#?}",
        run.lines()
    );
    run
}

#[test]
fn one_sampler_and_one_forwarder_per_outbox_and_kill_9_leaves_no_stale_lock() {
    let Some(db) = TestDb::create() else { return };
    let mut setup = Setup::new();
    let mut first = running_logger(&mut setup, &db);
    let pid = first.pid();
    let at_once = Duration::from_secs(15);

    let second = run_to_exit(&setup, &["run"], at_once);
    second.failed();
    assert!(
        second
            .stderr
            .contains(&format!("(pid {pid}) is already sampling into"))
            && second.stderr.contains("systemctl stop hxlog"),
        "{second}"
    );
    assert!(!second.stderr.contains("hxlog starting"), "{second}");

    let sample = run_to_exit(&setup, &["sample"], at_once);
    sample.failed();
    assert!(
        sample
            .stderr
            .contains(&format!("(pid {pid}) is already sampling into")),
        "{sample}"
    );

    let simulate = run_to_exit(&setup, &["simulate", "--count", "3"], at_once);
    simulate.failed();
    assert!(
        simulate
            .stderr
            .contains(&format!("(pid {pid}) is already sampling into")),
        "{simulate}"
    );

    let replay = run_to_exit(&setup, &["replay"], at_once);
    replay.failed();
    assert!(
        replay
            .stderr
            .contains(&format!("(pid {pid}) is already forwarding"))
            && replay.stderr.contains("to postgres")
            && replay.stderr.contains("hxlog status"),
        "{replay}"
    );
    // re-sending a window moves no cursor: allowed alongside the service
    run_to_exit(
        &setup,
        &["replay", "--since", "1h"],
        Duration::from_secs(60),
    )
    .ok();

    // kill -9: the kernel drops the locks with the process
    send_signal(pid, libc::SIGKILL);
    assert!(wait_until(Duration::from_secs(10), || !first.is_running()));
    run_to_exit(&setup, &["sample"], at_once).ok();
    let mut next = Running::spawn(&mut setup.cmd(&["run"]));
    assert!(
        next.wait_for_line(Duration::from_secs(30), |l| l.contains("sample ")),
        "run after kill -9 took no sample: {:#?}",
        next.lines()
    );
    assert!(
        next.terminate(hxlog_test_support::SIGTERM_DEADLINE)
            .is_some_and(|s| s.success())
    );
}

#[test]
fn a_value_of_secrets_json_never_appears_in_output_or_logs() {
    let setup = Setup::new();
    setup.healthy_bus([60.0, 40.0, 10.0, 30.0]);
    let secret = "8675309123";
    for body in [
        format!(
            r#"{{"PG_DB_HOST":"h","PG_DB_NAME":"d","PG_DB_USER":"u","PG_DB_PASSWORD":{secret}}}"#
        ),
        format!(r#"{{"AZURE_WEBPUBSUB_CONNECTION_STRING":{secret}}}"#),
        format!(r#"{{"PG_DB_HOST":"h","PG_DB_NAME":"d","PG_DB_USER":"u","PG_DB_PORT":{secret}}}"#),
    ] {
        let secrets = setup.write("secrets.json", &body);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
        for args in [&["replay"][..], &["status"], &["migrate"]] {
            let mut cmd = setup.cmd(args);
            cmd.env("RUST_LOG", "trace");
            let out = crate::common::output(&mut cmd);
            out.failed();
            assert!(!out.all_output().contains(secret), "{body} {args:?}: {out}");
            assert!(out.stderr.contains("secrets.json"), "{args:?}: {out}");
        }
        // `run` keeps sampling with a broken secrets file (nothing is
        // forwarded until it is fixed): its log names the file, never a value.
        let mut cmd = setup.cmd(&["run"]);
        cmd.env("RUST_LOG", "trace");
        let mut run = Running::spawn(&mut cmd);
        let named = run.wait_for_line(crate::common::scaled(Duration::from_secs(20)), |l| {
            l.contains("NOT FORWARDING") && l.contains("secrets.json")
        });
        let sampled = run.wait_for_line(crate::common::scaled(Duration::from_secs(20)), |l| {
            l.contains(" sample ")
        });
        run.terminate(hxlog_test_support::SIGTERM_DEADLINE)
            .expect("run stops on SIGTERM");
        let log = run.lines().join("\n");
        assert!(named && sampled, "{body}: {log}");
        assert!(!log.contains(secret), "{body}: {log}");
    }
}

#[test]
fn role_names_and_device_id_with_control_characters_or_too_long_are_refused_at_load() {
    let mut setup = Setup::new();
    setup.healthy_bus([60.0, 40.0, 10.0, 30.0]);
    let ids = crate::common::IDS;
    setup.mapping(&[
        ("T1\u{0}", ids[0]),
        ("T2", ids[1]),
        ("T3", ids[2]),
        ("T4", ids[3]),
    ]);
    let out = setup.run(&["sample"]);
    out.failed();
    assert!(
        out.stderr
            .contains("devicenames.json: the role name \"T1\\0\"")
            && out.stderr.contains("control character"),
        "{out}"
    );
    setup.mapping(
        &crate::common::ROLES
            .iter()
            .copied()
            .zip(ids)
            .collect::<Vec<_>>(),
    );
    setup.set("device_id", json!("x".repeat(65)));
    let out = setup.run(&["sample"]);
    out.failed();
    assert!(
        out.stderr.contains("hxlog.json: \"device_id\"") && out.stderr.contains("at most 64"),
        "{out}"
    );
    setup.set("device_id", json!("hx-01\r"));
    setup.run(&["sample"]).failed();
    setup.set("device_id", json!("x".repeat(64)));
    setup.run(&["sample"]).ok();
    assert_eq!(setup.sample_count(), 1, "a refused config wrote no sample");
}

#[test]
fn upper_case_sensor_ids_in_devicenames_match_the_kernels_lower_case_folders() {
    let mut setup = Setup::new();
    setup.healthy_bus([60.0, 40.0, 10.0, 30.0]);
    let ids = crate::common::IDS;
    let upper: Vec<String> = ids.iter().map(|i| i.to_ascii_uppercase()).collect();
    let roles = crate::common::ROLES;
    setup.mapping(
        &roles
            .iter()
            .copied()
            .zip(upper.iter().map(String::as_str))
            .collect::<Vec<_>>(),
    );
    setup.set("calibration", json!({ upper[1].clone(): 0.5 }));
    let out = setup.run(&["sample", "--json"]);
    out.ok();
    let sample: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    for (role, want) in roles.iter().zip([60.0, 40.5, 10.0, 30.0]) {
        let r = crate::common::reading(&sample, role);
        assert_eq!(r["quality"], "ok", "{role}: {sample}");
        assert_eq!(r["celsius"].as_f64(), Some(want), "{role}: {sample}");
    }
}

#[test]
fn a_date_time_without_offset_is_refused_never_cut_to_its_date() {
    let setup = Setup::new();
    setup.healthy_bus([60.0, 40.0, 10.0, 30.0]);
    setup.run(&["sample"]).ok();
    for args in [
        &[
            "export",
            "--since",
            "2000-01-01",
            "--until",
            "2099-11-28T07:30:00",
        ][..],
        &["export", "--since", "2099-11-28 07:30:00"],
        &["replay", "--since", "2000-01-01T00:00:00"],
    ] {
        let out = setup.run(args);
        out.failed();
        assert!(
            out.stderr.contains("has no UTC offset")
                && out.stderr.contains("Z (UTC)")
                && out.stderr.contains("a date (2026-11-01, UTC midnight)"),
            "{args:?}: {out}"
        );
    }
    // with an offset the time of day counts
    let csv = setup.export_csv(&["--since", "2000-01-01", "--until", "2099-11-28T07:30:00Z"]);
    assert_eq!(csv.rows.len(), 1);
    let help = setup.run(&["export", "--help"]);
    let words = help.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(words.contains("without an offset is refused"), "{help}");
}

/// A MAX31850 `w1_slave` text: 14-bit value in 0.25 °C steps, fault bit,
/// cause bits of byte 2, configuration byte 4 with its reserved bits set.
fn max31850_slave(quarter_degrees: i16, fault: bool, causes: u8) -> String {
    let [lo, hi] = ((quarter_degrees << 2) | i16::from(fault)).to_le_bytes();
    let sp = crate::common::with_crc([lo, hi, 0x90 | causes, 0x01, 0xf0, 0xff, 0xff, 0xff]);
    crate::common::w1_slave_bytes(sp, "YES")
}

#[test]
fn a_max31850_fault_is_a_missing_reading_and_its_range_is_the_thermocouples() {
    let setup = Setup::new();
    let bus = setup.healthy_bus([60.0, 40.0, 10.0, 30.0]);
    let tc = "3b-000000a1b2c3";
    setup.mapping(&[
        ("T1", tc),
        ("T2", crate::common::IDS[1]),
        ("T3", crate::common::IDS[2]),
        ("T4", crate::common::IDS[3]),
    ]);
    let t1 = |setup: &Setup| {
        let out = setup.run(&["sample", "--json"]);
        out.ok();
        let sample: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        crate::common::reading(&sample, "T1").clone()
    };
    bus.sensor_text(tc, &max31850_slave(4 * 400, false, 0));
    let r = t1(&setup);
    assert_eq!(
        (r["quality"].as_str(), r["celsius"].as_f64()),
        (Some("ok"), Some(400.0)),
        "{r}"
    );
    bus.sensor_text(tc, &max31850_slave(4 * 25, true, 0x01));
    let r = t1(&setup);
    assert_eq!(r["quality"], "sensor_fault", "{r}");
    assert!(r["celsius"].is_null(), "{r}");
    assert!(
        r["reason"].as_str().unwrap().contains("thermocouple open"),
        "{r}"
    );
}

//! Operations: the 1-Wire shell scripts against fake sysfs trees, and the
//! systemd units through `systemd-analyze`.
//!
//! Needs bash; shellcheck and systemd-analyze are used when present. A missing
//! tool skips its test with a reason on stderr, except under `CI`, where it
//! fails: CI must run every check.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const HEALTHY_1: &str =
    "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n";
const HEALTHY_2: &str =
    "5e ff 4b 46 7f ff 02 10 d8 : crc=d8 YES\n5e ff 4b 46 7f ff 02 10 d8 t=-10125\n";
const CRC_NO: &str = "72 01 4b 46 7f ff 0e 10 57 : crc=00 NO\n72 01 4b 46 7f ff 0e 10 57 t=23125\n";
const POWER_ON_85: &str =
    "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n";
const PHANTOM: &str = "00-400000000000";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn script(name: &str) -> PathBuf {
    repo().join("scripts").join(name)
}

/// The tool on PATH, or `None` after saying why the test is skipped.
/// Under `CI` a missing tool is a failure, not a skip.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is required under CI but is not installed (apt-get install -y {name})"
        );
        eprintln!("skipping: {name} is not installed");
    }
    found
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A fake sysfs/proc/boot/dev tree for the w1 scripts.
struct FakeTree {
    dir: tempfile::TempDir,
}

impl FakeTree {
    fn new() -> Self {
        let tree = FakeTree {
            dir: tempfile::tempdir().expect("create temp dir"),
        };
        for d in ["sys/bus/w1/devices", "boot", "dev"] {
            fs::create_dir_all(tree.path(d)).unwrap();
        }
        tree.write("proc_modules", "");
        tree.write("group", "root:x:0:\n");
        tree
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn w1(&self) -> PathBuf {
        self.path("sys/bus/w1/devices")
    }

    fn write(&self, rel: &str, content: &str) {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    fn master(&self) -> &Self {
        let m = "sys/bus/w1/devices/w1_bus_master1";
        self.write(&format!("{m}/w1_master_slave_count"), "0\n");
        self.write(&format!("{m}/w1_master_remove"), "");
        self.write(&format!("{m}/w1_master_search"), "");
        self
    }

    fn device(&self, id: &str, w1_slave: Option<&str>) -> &Self {
        let d = format!("sys/bus/w1/devices/{id}");
        fs::create_dir_all(self.path(&d)).unwrap();
        if let Some(content) = w1_slave {
            self.write(&format!("{d}/w1_slave"), content);
        }
        self
    }

    fn modules(&self, names: &[&str]) -> &Self {
        let lines: String = names
            .iter()
            .map(|n| format!("{n} 16384 0 - Live 0x0\n"))
            .collect();
        self.write("proc_modules", &lines);
        self
    }

    /// Every file under the tree with its content, to prove a run changed nothing.
    fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
            for entry in fs::read_dir(dir).unwrap() {
                let p = entry.unwrap().path();
                if p.is_dir() {
                    out.insert(p.clone(), "<dir>".into());
                    walk(&p, out);
                } else {
                    out.insert(p.clone(), fs::read_to_string(&p).unwrap());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(self.dir.path(), &mut out);
        out
    }

    /// The script with every path pointed into the tree and no inherited overrides.
    fn command(&self, name: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(script(name));
        for var in ["W1_ROOT", "MODPROBE", "BOOT_CONFIG", "W1_SEARCH_COUNT"] {
            cmd.env_remove(var);
        }
        cmd.env("SYSFS_ROOT", self.path("sys"))
            .env("PROC_MODULES", self.path("proc_modules"))
            .env("BOOT_CONFIG", self.path("boot/config.txt"))
            .env("DEV_ROOT", self.path("dev"))
            .env("GROUP_FILE", self.path("group"))
            .env("HXLOG_USER", "hxlog")
            .env("DEVICENAMES", self.path("devicenames.json"))
            .env("W1_SETTLE_TIMEOUT", "0")
            .stdin(Stdio::null());
        cmd
    }
}

/// Runs `cmd`, asserts it exited 0 (showing both streams if not), returns stdout.
#[track_caller]
fn run_ok(cmd: Command) -> String {
    let out = run(cmd);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    stdout
}

fn run(mut cmd: Command) -> Output {
    cmd.output().expect("run script")
}

fn healthy_tree() -> FakeTree {
    let tree = FakeTree::new();
    tree.master()
        .device("28-000000000001", Some(HEALTHY_1))
        .device("28-000000000002", Some(HEALTHY_2))
        .modules(&["w1_gpio", "w1_therm", "wire"]);
    tree.write("boot/config.txt", "[all]\ndtoverlay=w1-gpio,gpiopin=4\n");
    tree.write("group", "root:x:0:\ngpio:x:997:pi,hxlog\n");
    tree.write(
        "devicenames.json",
        r#"{"T1": "28-000000000001", "T2": "28-000000000002"}"#,
    );
    tree
}

fn broken_tree() -> FakeTree {
    let tree = FakeTree::new();
    tree.master()
        .device(PHANTOM, None)
        .device("28-000000000001", Some(HEALTHY_1))
        .device("28-0000000000c0", Some(CRC_NO))
        .device("28-000000000085", Some(POWER_ON_85))
        .device("28-0000000000ee", Some(""));
    tree.write("boot/config.txt", "#dtoverlay=w1-gpio\n");
    tree
}

#[test]
fn scripts_pass_shellcheck() {
    let Some(shellcheck) = tool("shellcheck") else {
        return;
    };
    let files = [
        script("w1_diagnostic.sh"),
        script("w1_bus_recovery.sh"),
        script("check-deb.sh"),
        script("pi-env.sh"),
        script("build-pi.sh"),
        script("test-pi.sh"),
        script("bench-pi.sh"),
        repo().join("debian/postinst"),
        repo().join("debian/prerm"),
        repo().join("debian/postrm"),
    ];
    let out = Command::new(shellcheck).args(&files).output().unwrap();
    assert!(out.status.success(), "shellcheck:\n{}", text(&out.stdout));
}

#[test]
fn diagnostic_healthy_tree_exits_zero_and_lists_devices() {
    let tree = healthy_tree();
    let out = run(tree.command("w1_diagnostic.sh"));
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    for want in [
        "w1_gpio is loaded",
        "w1_therm is loaded",
        "dtoverlay=w1-gpio,gpiopin=4",
        "w1_bus_master1",
        "28-000000000001: CRC YES, 23.125 C",
        "28-000000000002: CRC YES, -10.125 C",
        "T1 -> 28-000000000001 is present",
        "user hxlog is in group gpio",
        "healthy: no problems found",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("PROBLEM"), "{stdout}");
}

#[test]
fn diagnostic_names_each_problem_with_a_recommendation() {
    let tree = broken_tree();
    tree.write(
        "devicenames.json",
        r#"{"T1": "28-000000000001", "T4": "28-0000000000ff"}"#,
    );
    let out = run(tree.command("w1_diagnostic.sh"));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "stdout:\n{stdout}");
    for want in [
        // problems
        "[PROBLEM] w1_gpio is not loaded",
        "[PROBLEM] w1_therm is not loaded",
        "dtoverlay=w1-gpio is commented out",
        &format!("[PROBLEM] {PHANTOM}: phantom device"),
        "[PROBLEM] 28-0000000000c0: CRC NO",
        "[PROBLEM] 28-000000000085: CRC YES, 85.000 C",
        "[PROBLEM] 28-0000000000ee: empty read",
        "T4 -> 28-0000000000ff",
        "28-000000000001: CRC YES, 23.125 C",
        // recommendations
        "Recommendations:",
        "sudo modprobe w1-gpio && sudo modprobe w1-therm",
        "add 'dtoverlay=w1-gpio'",
        "Remove phantom 00-... devices: sudo w1_bus_recovery.sh",
        "CRC errors: keep cables short",
        "4.7 kOhm pull-up",
        "A sensor reports 85 C",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
}

#[test]
fn diagnostic_without_bus_master_or_devices_fails() {
    let tree = FakeTree::new();
    tree.modules(&["w1_gpio", "w1_therm"]);
    let out = run(tree.command("w1_diagnostic.sh"));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("no bus master"), "{stdout}");
    assert!(
        stdout.contains("no devices found on the 1-Wire bus"),
        "{stdout}"
    );
    assert!(
        stdout.contains("flat side facing you: GND, DQ, VDD"),
        "{stdout}"
    );
}

#[test]
fn diagnostic_help_and_bad_argument() {
    let tree = FakeTree::new();
    let mut cmd = tree.command("w1_diagnostic.sh");
    cmd.arg("--help");
    let out = run(cmd);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("W1_ROOT"));
    let mut cmd = tree.command("w1_diagnostic.sh");
    cmd.arg("--bogus");
    assert_eq!(run(cmd).status.code(), Some(2));
}

#[test]
fn recovery_dry_run_lists_the_plan_and_changes_nothing() {
    let tree = broken_tree();
    let before = tree.snapshot();
    let mut cmd = tree.command("w1_bus_recovery.sh");
    // would fail loudly if the dry run executed it
    cmd.args(["--dry-run", "--yes"])
        .env("MODPROBE", "/nonexistent/modprobe");
    let stdout = run_ok(cmd);
    let remove = tree.w1().join("w1_bus_master1/w1_master_remove");
    for want in [
        format!("remove phantom device {PHANTOM}"),
        format!("would run: echo {PHANTOM} > {}", remove.display()),
        "would run: /nonexistent/modprobe -r w1_therm w1_gpio".to_string(),
        "would run: /nonexistent/modprobe w1-gpio".to_string(),
        "would run: /nonexistent/modprobe w1-therm".to_string(),
        "w1_master_search".to_string(),
        "nothing was changed".to_string(),
    ] {
        assert!(stdout.contains(&want), "missing {want:?} in:\n{stdout}");
    }
    assert_eq!(before, tree.snapshot(), "a dry run changed the tree");
}

#[test]
fn recovery_with_yes_removes_phantoms_and_reloads_modules() {
    let tree = broken_tree();
    let log = tree.path("modprobe.log");
    tree.write(
        "fake-modprobe",
        "#!/bin/sh\necho \"$*\" >> \"$MODPROBE_LOG\"\n",
    );
    let fake = tree.path("fake-modprobe");
    let mut perms = fs::metadata(&fake).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    fs::set_permissions(&fake, perms).unwrap();

    let mut cmd = tree.command("w1_bus_recovery.sh");
    cmd.arg("--yes")
        .env("MODPROBE", &fake)
        .env("MODPROBE_LOG", &log);
    run_ok(cmd);

    let master = tree.w1().join("w1_bus_master1");
    assert_eq!(
        fs::read_to_string(master.join("w1_master_remove")).unwrap(),
        format!("{PHANTOM}\n")
    );
    assert_eq!(
        fs::read_to_string(master.join("w1_master_search")).unwrap(),
        "-1\n"
    );
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        "-r w1_therm w1_gpio\nw1-gpio\nw1-therm\n",
        "modules must be unloaded, then w1-gpio loaded before w1-therm"
    );
}

#[test]
fn recovery_refuses_without_yes_when_stdin_is_not_a_terminal() {
    let tree = broken_tree();
    let before = tree.snapshot();
    let mut cmd = tree.command("w1_bus_recovery.sh");
    cmd.env("MODPROBE", "/nonexistent/modprobe");
    let out = run(cmd);
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "must refuse; stdout:\n{}",
        text(&out.stdout)
    );
    assert!(
        stderr.contains("stdin is not a terminal; re-run with --yes"),
        "{stderr}"
    );
    assert_eq!(before, tree.snapshot(), "a refused run changed the tree");
}

const SERVICES: [&str; 4] = [
    "hxlog.service",
    "hxlog-sample.service",
    "hxlog-replay.service",
    "hxlog-serve.service",
];
const UNITS: [&str; 6] = [
    "hxlog-serve.service",
    "hxlog.service",
    "hxlog-sample.service",
    "hxlog-sample.timer",
    "hxlog-replay.service",
    "hxlog-replay.timer",
];

fn unit(name: &str) -> PathBuf {
    repo().join("systemd").join(name)
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    // verify insists that ExecStart exists: check copies that run /bin/true
    // instead of /usr/bin/hxlog, which is only there once installed.
    let dir = tempfile::tempdir().unwrap();
    let mut copies = Vec::new();
    for name in UNITS {
        let original = fs::read_to_string(unit(name)).unwrap();
        if name.ends_with(".service") {
            assert!(
                original.contains("ExecStart=/usr/bin/hxlog "),
                "{name} must run /usr/bin/hxlog"
            );
        }
        let copy = dir.path().join(name);
        fs::write(&copy, original.replace("/usr/bin/hxlog", "/bin/true")).unwrap();
        copies.push(copy);
    }
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .args(&copies)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    // verify exits 0 on unknown keys and bad values: its warnings name the unit
    let complaints: Vec<&str> = stderr.lines().filter(|l| l.contains("hxlog")).collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify warnings:\n{}",
        complaints.join("\n")
    );
}

/// The "Overall exposure level" of a unit, as `systemd-analyze security` scores it offline.
fn exposure(analyze: &Path, name: &str) -> f64 {
    let out = Command::new(analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit(name))
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no exposure line for {name}:\n{stdout}\n{}",
                text(&out.stderr)
            )
        });
    // "→ Overall exposure level for hxlog.service: 1.1 OK 🙂"
    let after = line.rsplit(": ").next().unwrap();
    after
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse exposure from {line:?}"))
}

/// Each service's exposure budget: the score docs/OPERATIONS.md's table
/// claims for it ("| `hxlog.service` | 1.1 OK |"), so the test and the docs
/// cannot drift apart.
fn documented_exposure() -> BTreeMap<String, f64> {
    let doc = fs::read_to_string(repo().join("docs/OPERATIONS.md")).unwrap();
    doc.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let [_, name, score, _] = cells[..] else {
                return None;
            };
            let name = name.strip_prefix('`')?.strip_suffix('`')?;
            let score = score.split_whitespace().next()?.parse().ok()?;
            Some((name.to_string(), score))
        })
        .collect()
}

#[test]
fn services_score_within_their_documented_budget() {
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    let budgets = documented_exposure();
    for name in SERVICES {
        let budget = *budgets
            .get(name)
            .unwrap_or_else(|| panic!("docs/OPERATIONS.md gives no exposure for {name}"));
        let score = exposure(&analyze, name);
        eprintln!("{name}: exposure {score} (budget {budget})");
        assert!(
            score <= budget,
            "{name} scores {score}, above the {budget} docs/OPERATIONS.md claims"
        );
    }
}

/// The `Conflicts=` units of a unit file's `[Unit]` section.
fn conflicts(name: &str) -> Vec<String> {
    let text = fs::read_to_string(unit(name)).unwrap();
    let mut section = "";
    let mut found = vec![];
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[Unit]"
            && let Some(units) = line.strip_prefix("Conflicts=")
        {
            found.extend(units.split_whitespace().map(String::from));
        }
    }
    found.sort();
    found
}

#[test]
fn service_mode_and_timer_mode_conflict() {
    // starting one mode stops the other (docs/OPERATIONS.md, "The two modes")
    assert_eq!(
        conflicts("hxlog.service"),
        ["hxlog-replay.timer", "hxlog-sample.timer"]
    );
    assert_eq!(conflicts("hxlog-sample.timer"), ["hxlog.service"]);
    assert_eq!(conflicts("hxlog-replay.timer"), ["hxlog.service"]);
}

//! Shared helpers for the end-to-end tests of the built `hxlog` binary: a
//! clean command, fake w1-therm sysfs trees, a config folder per test,
//! deadline-bounded waits and signals.
//!
//! Used by every module of the `e2e` test binary and by the cucumber runner
//! through the `hxlog-test-support` crate.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

/// Environment variables that change hxlog's behaviour; [`hxlog`] removes them
/// so a developer's shell cannot leak into a test.
pub const HXLOG_ENV: [&str; 6] = [
    "USE_MOCK_SENSORS",
    "HXLOG_CONFIG",
    "RUST_LOG",
    "XDG_DATA_HOME",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
];

/// The `hxlog` binary built by cargo for this test run.
pub fn hxlog_path() -> &'static Path {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        // A test binary lives in `target/<profile>/deps/`; cargo puts the
        // binaries it was built with one level up (as cargo-test-support does).
        let exe = std::env::current_exe().expect("current_exe");
        let dir = exe.parent().and_then(Path::parent).expect("target dir");
        let path = dir.join("hxlog");
        assert!(path.exists(), "no hxlog binary at {}", path.display());
        path
    })
}

/// A [`Command`] for the built `hxlog` binary with a clean environment (none
/// of [`HXLOG_ENV`] set). Add `--config`, `current_dir` and env yourself.
pub fn hxlog() -> Command {
    let mut cmd = Command::new(hxlog_path());
    for var in HXLOG_ENV {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// What a finished command did: exit code (`None` when killed by a signal),
/// stdout and stderr as text.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The exit code.
    pub code: Option<i32>,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr (the logs).
    pub stderr: String,
}

impl Outcome {
    /// True when the command exited 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics with both streams unless the command exited 0; returns `self`.
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert!(self.success(), "expected exit 0, got {self}");
        self
    }

    /// Panics with both streams unless the command exited with a non-zero
    /// code (not a signal); returns `self`.
    #[track_caller]
    pub fn failed(&self) -> &Self {
        assert!(
            matches!(self.code, Some(c) if c != 0),
            "expected a non-zero exit, got {self}"
        );
        self
    }

    /// stdout and stderr together (for "says X somewhere" checks).
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to completion and captures its output.
pub fn output(cmd: &mut Command) -> Outcome {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", hxlog_path().display()));
    Outcome {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `HXLOG_TEST_TIME_FACTOR` (default 1): how much slower than this machine
/// the tests run, e.g. 8 under qemu. Every deadline in this crate is
/// multiplied by it; the assertions stay the same.
pub fn time_factor() -> f64 {
    static FACTOR: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *FACTOR.get_or_init(|| match std::env::var("HXLOG_TEST_TIME_FACTOR") {
        Ok(v) => v
            .parse::<f64>()
            .ok()
            .filter(|f| *f >= 1.0)
            .unwrap_or_else(|| panic!("HXLOG_TEST_TIME_FACTOR={v:?}: want a number >= 1")),
        Err(_) => 1.0,
    })
}

/// How long a test gives `hxlog` to exit after SIGTERM: well above the 5 s
/// grace the forwarder itself allows an in-flight batch.
pub const SIGTERM_DEADLINE: Duration = Duration::from_secs(20);

/// `deadline` stretched by [`time_factor`].
pub fn scaled(deadline: Duration) -> Duration {
    deadline.mul_f64(time_factor())
}

/// Polls `condition` until it is true or `deadline` (scaled by
/// [`time_factor`]) has passed; true when it became true. The pause between
/// polls is only to spare the CPU: the deadline, not a sleep, decides the
/// outcome.
pub fn wait_until(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + scaled(deadline);
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Sends `signal` (e.g. `libc::SIGTERM`) to the process `pid`.
pub fn send_signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    // SAFETY: kill(2) has no memory-safety preconditions; `pid` is a child we spawned.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}

/// Sends SIGTERM to the process `pid`.
pub fn sigterm(pid: u32) {
    send_signal(pid, libc::SIGTERM);
}

/// Waits up to `deadline` for `child` to exit; `None` if it is still running.
pub fn wait_exit(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_until(deadline, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    status
}

/// A spawned process that is killed (SIGKILL) and reaped when dropped, so a
/// test that panics never leaves `hxlog run` behind. std's [`Child`] does not
/// kill on drop, and a leftover child holding the test's stdout or stderr keeps
/// `cargo test | grep …` waiting forever. Derefs to the [`Child`].
#[derive(Debug)]
pub struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    /// Spawns `cmd` (set its stdio first).
    pub fn spawn(cmd: &mut Command) -> KillOnDrop {
        KillOnDrop(Some(cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start {:?}: {e}", cmd.get_program())
        })))
    }

    /// Waits for the exit and collects the piped output (as
    /// [`Child::wait_with_output`]); nothing is left to kill afterwards.
    pub fn wait_with_output(mut self) -> std::process::Output {
        let child = self.0.take().expect("child present until consumed");
        child.wait_with_output().expect("wait for the child")
    }
}

/// `cmd.spawn_guarded()`: [`KillOnDrop::spawn`] in method form.
pub trait SpawnGuarded {
    /// Spawns the command; the process is killed if the guard is dropped
    /// while it still runs.
    fn spawn_guarded(&mut self) -> KillOnDrop;
}

impl SpawnGuarded for Command {
    fn spawn_guarded(&mut self) -> KillOnDrop {
        KillOnDrop::spawn(self)
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("child present until consumed")
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("child present until consumed")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut()
            && let Ok(None) = child.try_wait()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A long-running `hxlog` (e.g. `run`) whose stderr lines are collected as
/// they arrive. Dropping it kills the process if it is still running.
pub struct Running {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Spawns `cmd` with stdout discarded and stderr collected line by line.
    pub fn spawn(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", hxlog_path().display()));
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Running {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The stderr lines received so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits up to `deadline` for a stderr line satisfying `pred`.
    pub fn wait_for_line(&self, deadline: Duration, pred: impl Fn(&str) -> bool) -> bool {
        wait_until(deadline, || self.lines().iter().any(|l| pred(l)))
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Sends SIGTERM and waits up to `deadline` for the exit; `None` if it did
    /// not exit in time. All stderr is collected once it returns `Some`.
    pub fn terminate(&mut self, deadline: Duration) -> Option<ExitStatus> {
        sigterm(self.pid());
        let status = wait_exit(&mut self.child, deadline);
        if status.is_some()
            && let Some(reader) = self.reader.take()
        {
            reader.join().expect("stderr reader");
        }
        status
    }
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("pid", &self.child.id())
            .field("lines", &self.lines.lock().map(|l| l.len()).unwrap_or(0))
            .finish()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Dallas/Maxim CRC-8 (reflected polynomial 0x8C, initial 0), as the DS18B20
/// computes over its scratchpad. A copy, so the tests do not trust the code
/// under test to build their inputs.
pub fn crc8(bytes: &[u8]) -> u8 {
    let mut crc = 0u8;
    for &byte in bytes {
        crc ^= byte;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x8c
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// A 12-bit DS18B20 scratchpad (bytes 0..8) for a raw value and byte 6.
pub fn ds18b20_bytes(raw: i16, byte6: u8) -> [u8; 8] {
    let [lo, hi] = raw.to_le_bytes();
    [lo, hi, 0x4b, 0x46, 0x7f, 0xff, byte6, 0x10]
}

/// Appends the correct CRC byte to eight scratchpad bytes.
pub fn with_crc(bytes: [u8; 8]) -> [u8; 9] {
    let mut sp = [0u8; 9];
    sp[..8].copy_from_slice(&bytes);
    sp[8] = crc8(&bytes);
    sp
}

/// A `w1_slave` text exactly as w1-therm writes it for these nine bytes: the
/// kernel's `crc=XX` (computed) and `verdict` (`YES`/`NO`) on line 1, and the
/// truncated millidegrees `t=` on line 2.
pub fn w1_slave_bytes(sp: [u8; 9], verdict: &str) -> String {
    let hex: Vec<String> = sp.iter().map(|b| format!("{b:02x}")).collect();
    let hex = hex.join(" ");
    let milli = i32::from(i16::from_le_bytes([sp[0], sp[1]])) * 1000 / 16;
    format!(
        "{hex} : crc={:02x} {verdict}\n{hex} t={milli}\n",
        crc8(&sp[..8])
    )
}

/// A valid `w1_slave` text for `temp_c` (a multiple of 1/16 °C for the 12-bit
/// families 22, 28, 3b and 42; of 0.5 °C for the DS18S20, family 10), with
/// byte 6 as a real chip sets it after a conversion (so 85.0 is genuine).
pub fn w1_slave_text(family: u8, temp_c: f64) -> String {
    let bytes = if family == 0x10 {
        let raw = (temp_c * 2.0).round();
        assert_eq!(raw / 2.0, temp_c, "DS18S20 texts need 0.5 °C steps");
        let [lo, hi] = (raw as i16).to_le_bytes();
        // COUNT_PER_C = 0: plain 0.5 °C resolution.
        [lo, hi, 0x4b, 0x46, 0xff, 0xff, 0x00, 0x00]
    } else {
        let raw = (temp_c * 16.0).round();
        assert_eq!(raw / 16.0, temp_c, "12-bit texts need 1/16 °C steps");
        let raw = raw as i16;
        ds18b20_bytes(raw, 0x10 - (raw & 0x0f) as u8)
    };
    w1_slave_bytes(with_crc(bytes), "YES")
}

/// Every way a DS18B20 read goes wrong that hxlog must record as a missing
/// reading (plus [`Fault::NotFound`], a sensor folder that is absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The kernel's CRC check failed: `crc=.. NO`.
    CrcNo,
    /// An empty `w1_slave` (the kernel gave up).
    Empty,
    /// A truncated file: only the first line.
    Garbage,
    /// `YES`, but the CRC byte does not match the bytes.
    CrcMismatch,
    /// Nine zero bytes, which pass the CRC.
    AllZero,
    /// 85.0 °C with byte 6 = 0x0c: no conversion happened.
    PowerOnReset,
    /// Raw 0x07ff: not enough power to convert.
    InsufficientPower,
    /// 125.0625 °C, above the sensor's range.
    OutOfRange,
    /// The sensor folder is not on the bus.
    NotFound,
}

impl Fault {
    /// Every fault, for table-driven tests.
    pub const ALL: [Fault; 9] = [
        Fault::CrcNo,
        Fault::Empty,
        Fault::Garbage,
        Fault::CrcMismatch,
        Fault::AllZero,
        Fault::PowerOnReset,
        Fault::InsufficientPower,
        Fault::OutOfRange,
        Fault::NotFound,
    ];

    /// The quality code hxlog must record (`crc_no`, …).
    pub fn code(self) -> &'static str {
        match self {
            Fault::CrcNo => "crc_no",
            Fault::Empty => "empty",
            Fault::Garbage => "garbage",
            Fault::CrcMismatch => "crc_mismatch",
            Fault::AllZero => "all_zero",
            Fault::PowerOnReset => "power_on_reset",
            Fault::InsufficientPower => "insufficient_power",
            Fault::OutOfRange => "out_of_range",
            Fault::NotFound => "not_found",
        }
    }

    /// Parses a quality code back (`"crc_no"` → [`Fault::CrcNo`]).
    pub fn from_code(code: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.code() == code)
    }

    /// The `w1_slave` contents for this fault; `None` for [`Fault::NotFound`]
    /// (there is no folder at all).
    pub fn w1_slave(self) -> Option<String> {
        let ok = with_crc(ds18b20_bytes(0x0172, 0x0e)); // 23.125 °C
        Some(match self {
            Fault::CrcNo => w1_slave_bytes(ok, "NO"),
            Fault::Empty => String::new(),
            Fault::Garbage => w1_slave_bytes(ok, "YES")
                .lines()
                .next()
                .unwrap()
                .to_string(),
            Fault::CrcMismatch => {
                let mut bad = ok;
                bad[8] ^= 0x01;
                // The kernel writes its own crc= and says YES; only byte 8 is off.
                w1_slave_bytes(bad, "YES")
            }
            Fault::AllZero => w1_slave_bytes([0; 9], "YES"),
            Fault::PowerOnReset => w1_slave_bytes(with_crc(ds18b20_bytes(0x0550, 0x0c)), "YES"),
            Fault::InsufficientPower => {
                w1_slave_bytes(with_crc(ds18b20_bytes(0x07ff, 0x01)), "YES")
            }
            Fault::OutOfRange => w1_slave_bytes(with_crc(ds18b20_bytes(2001, 0x0f)), "YES"),
            Fault::NotFound => return None,
        })
    }
}

/// Sensor ids used by the tests for T1..T4.
pub const IDS: [&str; 4] = [
    "28-0316a2790a01",
    "28-0316a2790a02",
    "28-0316a2790a03",
    "28-0316a2790a04",
];

/// The roles in mapping order.
pub const ROLES: [&str; 4] = ["T1", "T2", "T3", "T4"];

/// A fake `/sys/bus/w1/devices`: a bus master folder and sensor folders with
/// `w1_slave` files, built in a folder the caller owns. Every write is atomic
/// (a temporary file renamed into place), so a running hxlog never sees half
/// a file.
#[derive(Debug, Clone)]
pub struct FakeBus {
    root: PathBuf,
}

impl FakeBus {
    /// Creates `root/w1_bus_master1` (the bus exists, no sensors yet).
    pub fn new(root: impl Into<PathBuf>) -> FakeBus {
        let bus = FakeBus { root: root.into() };
        std::fs::create_dir_all(bus.root.join("w1_bus_master1")).unwrap();
        bus.update_slave_count();
        bus
    }

    /// The root folder (hxlog's `w1_root`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A sensor's folder.
    pub fn sensor_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// A sensor's `w1_slave` file.
    pub fn w1_slave_path(&self, id: &str) -> PathBuf {
        self.sensor_dir(id).join("w1_slave")
    }

    /// Adds (or replaces) a healthy sensor reading `temp_c`, externally powered.
    pub fn sensor(&self, id: &str, temp_c: f64) -> &Self {
        let family = u8::from_str_radix(&id[..2], 16).expect("hex family");
        self.sensor_text(id, &w1_slave_text(family, temp_c))
    }

    /// Adds (or replaces) a sensor whose `w1_slave` holds exactly `text`.
    pub fn sensor_text(&self, id: &str, text: &str) -> &Self {
        let dir = self.sensor_dir(id);
        std::fs::create_dir_all(&dir).unwrap();
        write_atomic(&dir.join("ext_power"), "1\n");
        write_atomic(&dir.join("w1_slave"), text);
        self.update_slave_count();
        self
    }

    /// Gives sensor `id` the fault `fault` ([`Fault::NotFound`] removes its folder).
    pub fn fault(&self, id: &str, fault: Fault) -> &Self {
        match fault.w1_slave() {
            Some(text) => self.sensor_text(id, &text),
            None => self.remove(id),
        }
    }

    /// Sets a sensor's `ext_power` (`false` = parasite power).
    pub fn ext_power(&self, id: &str, external: bool) -> &Self {
        write_atomic(
            &self.sensor_dir(id).join("ext_power"),
            if external { "1\n" } else { "0\n" },
        );
        self
    }

    /// Adds a phantom `00-…` device (bus noise).
    pub fn phantom(&self, id: &str) -> &Self {
        assert!(id.starts_with("00-"), "phantoms are 00-…: {id}");
        std::fs::create_dir_all(self.sensor_dir(id)).unwrap();
        self.update_slave_count();
        self
    }

    /// Removes a sensor's folder, as the kernel does when it is unplugged:
    /// atomically (renamed out of the bus first), so a reader never sees a
    /// folder without its `w1_slave`.
    pub fn remove(&self, id: &str) -> &Self {
        let dir = self.sensor_dir(id);
        if dir.exists() {
            let parent = self.root.parent().expect("the bus root has a parent");
            let gone = tempfile::Builder::new()
                .prefix(".unplugged-")
                .tempdir_in(parent)
                .unwrap();
            std::fs::rename(&dir, gone.path().join(id)).unwrap();
            // `gone` deletes the folder and its files when dropped.
        }
        self.update_slave_count();
        self
    }

    fn update_slave_count(&self) {
        let n = std::fs::read_dir(&self.root)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| !e.file_name().to_string_lossy().starts_with("w1_bus_master"))
            .count();
        write_atomic(
            &self.root.join("w1_bus_master1/w1_master_slave_count"),
            &format!("{n}\n"),
        );
    }
}

/// Writes `text` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("e2e-tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A test's own folder with `hxlog.json` (relative paths: `data`, `w1`,
/// `devicenames.json`) and the helpers to run hxlog against it.
///
/// The default config: `device_id` `e2e-hx`, `interval` `1s`, `data_dir`
/// `data`, `w1_root` `w1`, `sensor_source` `w1`, `devicenames`
/// `devicenames.json` mapping T1..T4 to [`IDS`]. Change keys with
/// [`Setup::set`] / [`Setup::remove_key`]; files are rewritten at once.
#[derive(Debug)]
pub struct Setup {
    dir: TempDir,
    config: serde_json::Map<String, Value>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup::new()
    }
}

impl Setup {
    /// A fresh folder with the default config and mapping (no bus yet).
    pub fn new() -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("hxlog-e2e-")
            .tempdir()
            .unwrap();
        let config = json!({
            "device_id": "e2e-hx",
            "interval": "1s",
            "data_dir": "data",
            "w1_root": "w1",
            "sensor_source": "w1",
            "devicenames": "devicenames.json",
            // the kernel clock may be unsynchronised here (see tests/e2e/clock.rs)
            "clock_sync": "always",
        });
        let mut setup = Setup {
            dir,
            config: config.as_object().unwrap().clone(),
        };
        setup.write_config();
        setup.mapping(&ROLES.iter().copied().zip(IDS).collect::<Vec<_>>());
        setup
    }

    /// The test's folder.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `hxlog.json`.
    pub fn config_path(&self) -> PathBuf {
        self.dir().join("hxlog.json")
    }

    /// `devicenames.json`.
    pub fn devicenames_path(&self) -> PathBuf {
        self.dir().join("devicenames.json")
    }

    /// The data folder (`data`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    /// The outbox file.
    pub fn outbox_path(&self) -> PathBuf {
        self.data_dir().join("outbox.sqlite")
    }

    /// The fake bus root (`w1`; not created until [`Setup::bus`]).
    pub fn w1_root(&self) -> PathBuf {
        self.dir().join("w1")
    }

    /// Creates the fake bus at [`Setup::w1_root`] (idempotent).
    pub fn bus(&self) -> FakeBus {
        FakeBus::new(self.w1_root())
    }

    /// The fake bus with T1..T4 ([`IDS`]) healthy at the given temperatures.
    pub fn healthy_bus(&self, temps: [f64; 4]) -> FakeBus {
        let bus = self.bus();
        for (id, t) in IDS.iter().zip(temps) {
            bus.sensor(id, t);
        }
        bus
    }

    /// Sets a config key and rewrites `hxlog.json`.
    pub fn set(&mut self, key: &str, value: Value) -> &mut Self {
        self.config.insert(key.to_string(), value);
        self.write_config();
        self
    }

    /// Removes a config key and rewrites `hxlog.json`.
    pub fn remove_key(&mut self, key: &str) -> &mut Self {
        self.config.remove(key);
        self.write_config();
        self
    }

    fn write_config(&mut self) {
        let text = serde_json::to_string_pretty(&self.config).unwrap();
        std::fs::write(self.config_path(), text).unwrap();
    }

    /// Writes `devicenames.json` with these (role, id) pairs, in order.
    pub fn mapping(&self, pairs: &[(&str, &str)]) {
        let map: serde_json::Map<String, Value> = pairs
            .iter()
            .map(|(r, i)| (r.to_string(), Value::from(*i)))
            .collect();
        std::fs::write(
            self.devicenames_path(),
            serde_json::to_string_pretty(&map).unwrap(),
        )
        .unwrap();
    }

    /// Writes a file in the test folder and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `hxlog --config <hxlog.json> <args…>`, run in the test folder.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = hxlog();
        cmd.current_dir(self.dir())
            .arg("--config")
            .arg(self.config_path())
            .args(args);
        cmd
    }

    /// Runs [`Setup::cmd`] to completion.
    pub fn run(&self, args: &[&str]) -> Outcome {
        output(&mut self.cmd(args))
    }

    /// `status --json`, parsed (panics unless it exits 0).
    pub fn status_json(&self) -> Value {
        let out = self.run(&["status", "--json"]);
        out.ok();
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("status --json: {e}\n{out}"))
    }

    /// The number of samples in the outbox according to `status --json`.
    pub fn sample_count(&self) -> u64 {
        self.status_json()["outbox"]["samples"]
            .as_u64()
            .expect("outbox.samples")
    }

    /// `export --format csv <extra…>` to stdout, parsed (panics unless it exits 0).
    pub fn export_csv(&self, extra: &[&str]) -> Csv {
        let mut args = vec!["export", "--format", "csv"];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        out.ok();
        Csv::parse(&out.stdout)
    }
}

/// An export parsed with the `csv` crate: the header and each row by column name.
#[derive(Debug, Clone)]
pub struct Csv {
    /// The header row.
    pub header: Vec<String>,
    /// The rows, oldest first, keyed by column name.
    pub rows: Vec<HashMap<String, String>>,
}

impl Csv {
    /// Parses CSV text with a header row.
    pub fn parse(text: &str) -> Csv {
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let header: Vec<String> = reader
            .headers()
            .expect("csv header")
            .iter()
            .map(String::from)
            .collect();
        let rows = reader
            .records()
            .map(|r| {
                let r = r.expect("csv record");
                assert_eq!(r.len(), header.len(), "ragged row {r:?}");
                header
                    .iter()
                    .cloned()
                    .zip(r.iter().map(String::from))
                    .collect()
            })
            .collect();
        Csv { header, rows }
    }

    /// The last row (panics when there is none).
    pub fn last(&self) -> &HashMap<String, String> {
        self.rows.last().expect("at least one exported row")
    }
}

/// A cell as `f64` (panics when it is not a number).
pub fn num(row: &HashMap<String, String>, column: &str) -> f64 {
    let cell = &row[column];
    cell.parse()
        .unwrap_or_else(|_| panic!("{column} = {cell:?} is not a number in {row:?}"))
}

/// The reading of `role` in a sample JSON object (`sample --json`, export
/// jsonl, `status --json`'s `last_sample`).
pub fn reading<'a>(sample: &'a Value, role: &str) -> &'a Value {
    sample["readings"]
        .as_array()
        .expect("readings array")
        .iter()
        .find(|r| r["role"] == role)
        .unwrap_or_else(|| panic!("no {role} reading in {sample}"))
}

/// The effectiveness, hot and cold effectiveness and LMTD the issue defines
/// for T1..T4, computed independently of hxlog.
pub fn expected_efficiency(t: [f64; 4]) -> (f64, f64, f64, f64) {
    let [t1, t2, t3, t4] = t;
    let hot = (t1 - t2) / (t1 - t3);
    let cold = (t4 - t3) / (t1 - t3);
    let (d1, d2) = (t1 - t4, t2 - t3);
    let lmtd = if d1 == d2 {
        d1
    } else {
        (d1 - d2) / (d1 / d2).ln()
    };
    (hot.max(cold), hot, cold, lmtd)
}

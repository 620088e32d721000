//! Configuration in two stages: the raw JSON file ([`RawConfig`], unknown keys
//! refused) → [`RawConfig::resolve`] (validation, defaults, paths, env
//! overrides, no network) → [`Config`], passed explicitly to everything else.
//!
//! Also reads the seed files the old Python tool's users keep:
//! `devicenames.json` (`{"T1": "28-…", …}`) and `secrets.json`. Secrets are
//! wrapped in [`Secret`], whose `Debug` and `Display` never show the value (`<redacted>`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::sensors::SensorSettings;
use crate::when::parse_duration;

/// The system-wide config file used when neither `--config` nor `HXLOG_CONFIG` is given.
pub const SYSTEM_CONFIG: &str = "/etc/hxlog/hxlog.json";

/// Where readings come from (`sensor_source`, overridden by `USE_MOCK_SENSORS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SensorSource {
    /// Real sensors when the 1-Wire bus exists (`w1_root` present), else mock.
    /// Never mock when the bus exists but a sensor is missing: that is a missing reading.
    #[default]
    Auto,
    /// Always the w1-therm sysfs bus.
    W1,
    /// Always the simulated exchanger; every sample is marked `mock`.
    Mock,
}

/// SQLite `synchronous` setting for the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync on every commit: a sample reported as taken survives power loss (default).
    #[default]
    Full,
    /// fsync at WAL checkpoints only: faster on slow SD cards, may lose the
    /// last samples on power loss (never corrupts).
    Normal,
}

/// The config file as written by the user. Every field is optional; see
/// `config/hxlog.example.json` for a documented example.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Free-form notes, ignored: lets a config file document itself
    /// (`config/hxlog.example.json` explains every key in it).
    #[serde(rename = "_comment", default)]
    pub comment: Option<serde_json::Value>,
    /// Name of this logger in every sink (default: the hostname).
    pub device_id: Option<String>,
    /// Time between samples for `hxlog run`, e.g. `"30s"` (default 30s; 1s to 1d).
    pub interval: Option<String>,
    /// Folder of the outbox (`outbox.sqlite`). Default `$XDG_DATA_HOME/hxlog`, else `./hxlog-data`.
    pub data_dir: Option<PathBuf>,
    /// `"auto"` (default), `"w1"` or `"mock"`.
    pub sensor_source: Option<SensorSource>,
    /// Root of the w1 sysfs devices (default `/sys/bus/w1/devices`).
    pub w1_root: Option<PathBuf>,
    /// Path of the role → sensor mapping (`devicenames.json`).
    pub devicenames: Option<PathBuf>,
    /// Path of `secrets.json` (Postgres and Web PubSub credentials).
    pub secrets: Option<PathBuf>,
    /// Calibration offsets in °C added to valid readings, keyed by role or sensor id.
    #[serde(default)]
    pub calibration: BTreeMap<String, f64>,
    /// Extra read attempts for a failed sensor read within one cycle (default 2; 0 to 10).
    pub read_retries: Option<u32>,
    /// Use the bus master's `therm_bulk_read` when present and writable (default true).
    pub bulk_read: Option<bool>,
    /// Outbox durability: `"full"` (default) or `"normal"`.
    pub sqlite_synchronous: Option<Synchronous>,
    /// How long delivered samples are kept for `export`, e.g. `"90d"` (default 90d; 1h to 3650d).
    /// Samples not yet delivered to every configured sink are never pruned.
    pub retention: Option<String>,
    /// Longest wait between delivery retries, e.g. `"5m"` (default 5m; 1s to 1d).
    pub retry_max: Option<String>,
    /// How long one delivery attempt (one batch) may take before it is
    /// abandoned and retried, e.g. `"60s"` (default 60s, at least 1s).
    pub send_timeout: Option<String>,
    /// How hxlog knows the system clock is synchronised: `"kernel"` (default,
    /// the kernel's `adjtimex()` status), `"always"` (a battery-backed RTC) or
    /// an absolute file path whose existence means synced (e.g.
    /// `/run/systemd/timesync/synchronized`).
    pub clock_sync: Option<String>,
    /// How long a sink holds back samples taken before the clock synchronised,
    /// waiting for their correction, e.g. `"10m"` (default 10m, at most 24h;
    /// `"0s"` sends them at once, marked unsynced).
    pub clock_sync_wait: Option<String>,
    /// Largest batch per Postgres statement (default 5000; 1 to 100000).
    /// `u64`, not `usize`: on 32-bit targets (armhf) a huge value must get the
    /// same range message, not a type error.
    pub postgres_batch_size: Option<u64>,
    /// Web PubSub hub name (default `heatexchanger`).
    pub webpubsub_hub: Option<String>,
    /// Optional Web PubSub group; without it messages go to the whole hub.
    pub webpubsub_group: Option<String>,
    /// Timeout of one Web PubSub request, e.g. `"10s"` (default 10s; 1s to 10m).
    pub webpubsub_timeout: Option<String>,
    /// Optional log file (in addition to stderr), reopened when rotated away.
    pub log_file: Option<PathBuf>,
    /// Log filter when `RUST_LOG` is unset, e.g. `"info"` or `"hxlog=debug"` (default info).
    pub log_level: Option<String>,
    /// Address of the read-only HTTP dashboard, `/metrics`, `/healthz` and
    /// `/api/*`, e.g. `"127.0.0.1:9108"` (default: off). A non-loopback
    /// address is served too, with a warning at start.
    pub http_listen: Option<String>,
    /// Sensor alarms: per-role `min`/`max`, `missing_for` and `effectiveness_below`.
    pub alarms: Option<RawAlarms>,
}

/// The `alarms` section as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlarms {
    /// Per role (`"T1"`…): `{"min": °C, "max": °C}`, either optional.
    #[serde(default)]
    pub roles: BTreeMap<String, RawLimits>,
    /// Raise a role's `missing` alarm after this many consecutive missing
    /// readings (default 3; 0 disables it; at most 10000).
    pub missing_for: Option<u32>,
    /// Raise the `effectiveness` alarm while the effectiveness is below this (0 to 1).
    pub effectiveness_below: Option<f64>,
}

/// A role's limits as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Alarm while the temperature is below this (°C).
    pub min: Option<f64>,
    /// Alarm while the temperature is above this (°C).
    pub max: Option<f64>,
}

/// The resolved configuration every command receives.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file that was read, if any.
    pub file: Option<PathBuf>,
    /// Name of this logger.
    pub device_id: String,
    /// Time between samples.
    pub interval: Duration,
    /// Folder of the outbox.
    pub data_dir: PathBuf,
    /// Configured source before auto-detection ([`Config::effective_source`] decides).
    pub sensor_source: SensorSource,
    /// Why the source is what it is (for logs), e.g. `USE_MOCK_SENSORS=true`.
    pub source_origin: String,
    /// What the sensor layer needs (mapping, calibration, retries).
    pub sensors: SensorSettings,
    /// The mapping file that was read, if any.
    pub devicenames: Option<PathBuf>,
    /// The secrets file, if one is configured or found.
    pub secrets: Option<PathBuf>,
    /// Outbox durability.
    pub synchronous: Synchronous,
    /// Retention of delivered samples.
    pub retention: Duration,
    /// Longest wait between delivery retries.
    pub retry_max: Duration,
    /// Longest delivery attempt.
    pub send_timeout: Duration,
    /// How clock synchronisation is detected.
    pub clock_sync: crate::clock::ClockSync,
    /// How long unsynced samples of the current boot are held back from sinks.
    pub clock_sync_wait: Duration,
    /// Largest Postgres batch.
    pub postgres_batch_size: usize,
    /// Web PubSub hub.
    pub webpubsub_hub: String,
    /// Web PubSub group.
    pub webpubsub_group: Option<String>,
    /// Web PubSub request timeout.
    pub webpubsub_timeout: Duration,
    /// Optional log file.
    pub log_file: Option<PathBuf>,
    /// Default log filter.
    pub log_level: String,
    /// Where the HTTP endpoints listen (`None`: not served).
    pub http_listen: Option<std::net::SocketAddr>,
    /// Alarm thresholds.
    pub alarms: crate::alarms::AlarmSettings,
}

impl Config {
    /// The secrets file, for messages: its path, or how to set one.
    pub fn secrets_file(&self) -> String {
        match &self.secrets {
            Some(p) => p.display().to_string(),
            None => "secrets.json (set \"secrets\" in the config)".into(),
        }
    }

    /// Path of the SQLite outbox.
    pub fn outbox_path(&self) -> PathBuf {
        self.data_dir.join("outbox.sqlite")
    }

    /// The source actually used: `auto` becomes `mock` only when `w1_root` does not exist.
    pub fn effective_source(&self) -> crate::sample::Source {
        use crate::sample::Source;
        match self.sensor_source {
            SensorSource::W1 => Source::W1,
            SensorSource::Mock => Source::Mock,
            SensorSource::Auto if self.sensors.w1_root.exists() => Source::W1,
            SensorSource::Auto => Source::Mock,
        }
    }

    /// Loads the configuration: `path` (from `--config`/`HXLOG_CONFIG`), else
    /// [`SYSTEM_CONFIG`] if it exists, else built-in defaults.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let system = Path::new(SYSTEM_CONFIG);
        let file = match path {
            Some(p) => Some(p.to_path_buf()),
            None if system.exists() => Some(system.to_path_buf()),
            None => None,
        };
        let raw = match &file {
            Some(f) => read_json::<RawConfig>(f, "config file")?,
            None => RawConfig::default(),
        };
        let env = Env::from_process();
        raw.resolve(file, &env)
    }
}

/// The environment variables the configuration honours, captured once so
/// resolution is a pure function (and testable).
#[derive(Debug, Default, Clone)]
pub struct Env {
    /// `USE_MOCK_SENSORS` (the old tool's switch).
    pub use_mock_sensors: Option<String>,
    /// `XDG_DATA_HOME`.
    pub xdg_data_home: Option<PathBuf>,
    /// The working directory, base for relative paths when there is no config file.
    pub cwd: PathBuf,
}

impl Env {
    /// Reads the process environment.
    pub fn from_process() -> Env {
        Env {
            use_mock_sensors: std::env::var("USE_MOCK_SENSORS").ok(),
            xdg_data_home: std::env::var_os("XDG_DATA_HOME")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        }
    }
}

impl RawConfig {
    /// Validates and resolves: defaults, relative paths (against the config
    /// file's folder), `USE_MOCK_SENSORS`, and the devicenames mapping.
    pub fn resolve(self, file: Option<PathBuf>, env: &Env) -> anyhow::Result<Config> {
        let where_ = file
            .as_ref()
            .map(|f| f.display().to_string())
            .unwrap_or_else(|| "the built-in defaults".into());
        let base = match &file {
            Some(f) => f
                .parent()
                .map(|p| {
                    if p.as_os_str().is_empty() {
                        env.cwd.clone()
                    } else {
                        env.cwd.join(p)
                    }
                })
                .unwrap_or_else(|| env.cwd.clone()),
            None => env.cwd.clone(),
        };
        let abs = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let dur = |name: &str,
                   v: &Option<String>,
                   default: &str,
                   bounds: Bounds|
         -> anyhow::Result<Duration> {
            let text = v.as_deref().unwrap_or(default);
            let d = parse_duration(text)
                .with_context(|| format!("{where_}: bad value for {name:?}"))?;
            if d < bounds.min || d > bounds.max {
                bail!(
                    "{where_}: {name:?} is {text:?}; it must be between {} and {} ({})",
                    show_bound(bounds.min),
                    show_bound(bounds.max),
                    bounds.why
                );
            }
            Ok(d)
        };

        let device_id = match self.device_id {
            Some(d) if d.trim().is_empty() => bail!(
                "{where_}: \"device_id\" is empty; set a name such as \"hx-01\" or remove the key to use the hostname"
            ),
            Some(d) => {
                check_name(&d).map_err(|why| {
                    anyhow::anyhow!(
                        "{where_}: \"device_id\" {d:?} {why}; use a name such as \"hx-01\""
                    )
                })?;
                d
            }
            None => gethostname::gethostname().to_string_lossy().into_owned(),
        };
        let interval = dur("interval", &self.interval, "30s", INTERVAL)?;
        let data_dir = match self.data_dir {
            Some(d) => abs(d),
            None => match &env.xdg_data_home {
                Some(x) => x.join("hxlog"),
                None => env.cwd.join("hxlog-data"),
            },
        };
        let (sensor_source, source_origin) = match env.use_mock_sensors.as_deref().map(str::trim) {
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => {
                (SensorSource::Mock, "USE_MOCK_SENSORS=true".to_string())
            }
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => {
                (SensorSource::W1, "USE_MOCK_SENSORS=false".to_string())
            }
            Some("") | None => (
                self.sensor_source.unwrap_or_default(),
                format!("sensor_source in {where_}"),
            ),
            Some(other) => bail!("USE_MOCK_SENSORS={other:?} is not understood; use true or false"),
        };
        let w1_root = abs(self
            .w1_root
            .unwrap_or_else(|| PathBuf::from("/sys/bus/w1/devices")));

        // devicenames.json: named, else beside the config file, else in the working directory.
        let devicenames = match self.devicenames {
            Some(p) => Some(abs(p)),
            None => [
                base.join("devicenames.json"),
                env.cwd.join("devicenames.json"),
            ]
            .into_iter()
            .find(|p| p.is_file()),
        };
        let mapping = match &devicenames {
            Some(p) => load_devicenames(p)?,
            None => Vec::new(),
        };
        let secrets = match self.secrets {
            Some(p) => Some(abs(p)),
            None => [base.join("secrets.json"), env.cwd.join("secrets.json")]
                .into_iter()
                .find(|p| p.is_file()),
        };
        // Calibration keys that are sensor ids match the kernel's lower case too.
        let calibration: BTreeMap<String, f64> = self
            .calibration
            .into_iter()
            .map(|(k, v)| {
                let lower = k.to_ascii_lowercase();
                match crate::sensors::w1::parse_id(&lower) {
                    Some(_) => (lower, v),
                    None => (k, v),
                }
            })
            .collect();
        for (key, offset) in &calibration {
            if !offset.is_finite() || offset.abs() > 10.0 {
                bail!(
                    "{where_}: calibration offset for {key:?} is {offset}; offsets are small corrections in °C (at most ±10)"
                );
            }
        }
        let clock_sync = match self.clock_sync.as_deref() {
            None => crate::clock::ClockSync::default(),
            Some(v) => v
                .parse()
                .map_err(|e: String| anyhow::anyhow!("{where_}: {e}"))?,
        };
        let clock_sync_wait = dur(
            "clock_sync_wait",
            &self.clock_sync_wait,
            "10m",
            CLOCK_SYNC_WAIT,
        )?;
        let postgres_batch_size = self.postgres_batch_size.unwrap_or(5000);
        if !(1..=100_000).contains(&postgres_batch_size) {
            bail!(
                "{where_}: \"postgres_batch_size\" is {postgres_batch_size}; it must be between 1 and 100000"
            );
        }
        // at most 100000: fits every usize
        let postgres_batch_size = postgres_batch_size as usize;
        let read_retries = self.read_retries.unwrap_or(2);
        if read_retries > 10 {
            bail!(
                "{where_}: \"read_retries\" is {read_retries}; it must be between 0 and 10 (each retry of a failed sensor costs up to a second of the cycle)"
            );
        }
        let http_listen = match self.http_listen.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(a) => Some(a.parse::<std::net::SocketAddr>().map_err(|e| {
                anyhow::anyhow!(
                    "{where_}: \"http_listen\" {a:?} is not an address and port ({e}); use e.g. \"127.0.0.1:9108\""
                )
            })?),
        };
        let alarms = resolve_alarms(self.alarms.unwrap_or_default())
            .map_err(|e| anyhow::anyhow!("{where_}: \"alarms\": {e}"))?;
        Ok(Config {
            http_listen,
            alarms,
            device_id,
            interval,
            data_dir,
            sensor_source,
            source_origin,
            sensors: SensorSettings {
                w1_root,
                mapping,
                calibration,
                retries: read_retries,
                bulk_read: self.bulk_read.unwrap_or(true),
            },
            devicenames,
            secrets,
            synchronous: self.sqlite_synchronous.unwrap_or_default(),
            retention: dur("retention", &self.retention, "90d", RETENTION)?,
            retry_max: dur("retry_max", &self.retry_max, "5m", RETRY_MAX)?,
            send_timeout: dur("send_timeout", &self.send_timeout, "60s", SEND_TIMEOUT)?,
            clock_sync,
            clock_sync_wait,
            postgres_batch_size,
            webpubsub_hub: self.webpubsub_hub.unwrap_or_else(|| "heatexchanger".into()),
            webpubsub_group: self.webpubsub_group.filter(|g| !g.is_empty()),
            webpubsub_timeout: dur("webpubsub_timeout", &self.webpubsub_timeout, "10s", TIMEOUT)?,
            log_file: self.log_file.map(abs),
            log_level: self.log_level.unwrap_or_else(|| "info".into()),
            file,
        })
    }
}

/// Checks the `alarms` section: finite limits, min below max, sensible counts.
fn resolve_alarms(raw: RawAlarms) -> Result<crate::alarms::AlarmSettings, String> {
    let mut roles = BTreeMap::new();
    for (role, l) in raw.roles {
        for (what, v) in [("min", l.min), ("max", l.max)] {
            if let Some(v) = v
                && (!v.is_finite() || !(-273.15..=2000.0).contains(&v))
            {
                return Err(format!("{role}.{what} is {v}; give a temperature in °C"));
            }
        }
        if let (Some(min), Some(max)) = (l.min, l.max)
            && min >= max
        {
            return Err(format!("{role}: min {min} is not below max {max}"));
        }
        roles.insert(
            role,
            crate::alarms::Limits {
                min: l.min,
                max: l.max,
            },
        );
    }
    let missing_for = raw.missing_for.unwrap_or(3);
    if missing_for > 10_000 {
        return Err(format!(
            "missing_for is {missing_for}; it must be between 0 (off) and 10000 readings"
        ));
    }
    if let Some(e) = raw.effectiveness_below
        && (!e.is_finite() || !(0.0..=1.0).contains(&e))
    {
        return Err(format!(
            "effectiveness_below is {e}; it is a ratio between 0 and 1"
        ));
    }
    Ok(crate::alarms::AlarmSettings {
        roles,
        missing_for,
        effectiveness_below: raw.effectiveness_below,
    })
}

/// The range allowed for one duration key of the config, and why. Every
/// duration a user writes is bounded, so the code that uses it (timers, the
/// prune cutoff, backoff) never meets an absurd value.
struct Bounds {
    min: Duration,
    max: Duration,
    why: &'static str,
}

const SECOND: Duration = Duration::from_secs(1);
const DAY: Duration = Duration::from_secs(86_400);

/// `interval`: 1s to 1d.
const INTERVAL: Bounds = Bounds {
    min: SECOND,
    max: DAY,
    why: "the DS18B20 needs 750 ms per conversion; for rarer samples use hxlog-sample.timer",
};
/// `retention`: 1h to 10 years.
const RETENTION: Bounds = Bounds {
    min: Duration::from_secs(3600),
    max: Duration::from_secs(3650 * 86_400),
    why: "delivered samples are kept this long for export; at most 10 years",
};
/// `retry_max`: 1s to 1d.
const RETRY_MAX: Bounds = Bounds {
    min: SECOND,
    max: DAY,
    why: "the longest wait between delivery retries",
};
/// Timeouts of one request: 1s to 10m.
const TIMEOUT: Bounds = Bounds {
    min: SECOND,
    max: Duration::from_secs(600),
    why: "the timeout of one request",
};

/// `send_timeout`: 1s to 1h (a large batch on a slow uplink).
const SEND_TIMEOUT: Bounds = Bounds {
    min: SECOND,
    max: Duration::from_secs(3600),
    why: "the longest delivery attempt of one batch",
};
/// `clock_sync_wait`: 0s to 1d.
const CLOCK_SYNC_WAIT: Bounds = Bounds {
    min: Duration::ZERO,
    max: DAY,
    why: "live views would stay dark while NTP is blocked",
};

/// A bound for messages: `1s`, `10m`, `1d`, `3650d`.
fn show_bound(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        _ if s.is_multiple_of(86_400) && s > 0 => format!("{}d", s / 86_400),
        _ if s.is_multiple_of(3600) && s > 0 => format!("{}h", s / 3600),
        _ if s.is_multiple_of(60) && s > 0 => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// Reads and parses a JSON file; errors name the file, line and column.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{what} {}:{}:{}: {} (fix the JSON at line {}, column {})",
            path.display(),
            e.line(),
            e.column(),
            e,
            e.line(),
            e.column()
        )
    })
}

/// Reads `devicenames.json` (`{"T1": "28-…", …}`) into (role, sensor id) pairs
/// in file order.
pub fn load_devicenames(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let map: serde_json::Map<String, serde_json::Value> = read_json(path, "device mapping")?;
    let mut out = Vec::with_capacity(map.len());
    for (role, id) in map {
        let Some(id) = id.as_str() else {
            bail!(
                "device mapping {}: the value of {role:?} must be a sensor id string such as \"28-0316a2790a3f\"",
                path.display()
            );
        };
        // The kernel names sensor folders in lower case (`28-0316a2790a3f`);
        // an id copied from a label or a datasheet in upper case must match it.
        let id = id.trim().to_ascii_lowercase();
        let id = id.as_str();
        if crate::sensors::w1::parse_id(id).is_none() {
            bail!(
                "device mapping {}: {role:?} maps to {id:?}, which is not a 1-Wire id (expected family-serial such as \"28-0316a2790a3f\"; `hxlog sensors` lists the ids on the bus)",
                path.display()
            );
        }
        if role.trim().is_empty() {
            bail!("device mapping {}: a role name is empty", path.display());
        }
        if let Err(why) = check_name(&role) {
            bail!(
                "device mapping {}: the role name {role:?} {why}; use a name such as \"T1\"",
                path.display()
            );
        }
        if let Some((other, _)) = out.iter().find(|(_, i): &&(String, String)| i == id) {
            bail!(
                "device mapping {}: {role:?} and {other:?} both map to {id}",
                path.display()
            );
        }
        out.push((role, id.to_string()));
    }
    Ok(out)
}

/// The longest `device_id` or role name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// Checks a name every sink stores (`device_id`, a role): at most
/// [`MAX_NAME_CHARS`] characters and no control characters (Postgres refuses
/// NUL, and a sample it refuses would block the queue). `Err` says why.
fn check_name(name: &str) -> Result<(), String> {
    let len = name.chars().count();
    if len > MAX_NAME_CHARS {
        return Err(format!(
            "is {len} characters long; at most {MAX_NAME_CHARS} are allowed"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("contains a control character (tab, newline, NUL, …)".into());
    }
    Ok(())
}

/// A secret string: `Debug` and `Display` print `<redacted>`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value itself; use only to hand it to a protocol, never to a log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// A value that old `secrets.json` files write either as a string or a number (`PG_DB_PORT`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum StringOrNumber {
    S(String),
    N(u64),
}

/// The seed-format `secrets.json`, keys exactly as the old tool wrote them.
/// Empty strings count as absent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case)]
struct RawSecrets {
    PG_DB_HOST: Option<String>,
    PG_DB_NAME: Option<String>,
    PG_DB_USER: Option<String>,
    PG_DB_PASSWORD: Option<Secret>,
    PG_DB_PORT: Option<StringOrNumber>,
    PG_DB_SSLMODE: Option<String>,
    PG_DB_SSLROOTCERT: Option<String>,
    AZURE_WEBPUBSUB_CONNECTION_STRING: Option<Secret>,
}

/// Postgres credentials from `secrets.json`.
#[derive(Debug, Clone)]
pub struct PgSecrets {
    /// Host name, IP address, or a Unix socket folder (starting with `/`).
    pub host: String,
    /// Port (default 5432).
    pub port: u16,
    /// Database name.
    pub dbname: String,
    /// User name.
    pub user: String,
    /// Password (may be empty for trust or peer auth).
    pub password: Secret,
    /// `PG_DB_SSLMODE` as written, if any (validated by the Postgres sink).
    pub sslmode: Option<String>,
    /// `PG_DB_SSLROOTCERT`: a PEM file of extra trusted roots.
    pub sslrootcert: Option<PathBuf>,
}

/// Everything in `secrets.json`. A sink is configured when its keys are present.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// Postgres, when `PG_DB_HOST` is set.
    pub postgres: Option<PgSecrets>,
    /// The Web PubSub connection string, when set.
    pub webpubsub: Option<Secret>,
}

impl Secrets {
    /// Reads `secrets.json`. Warns (with the fix) when the file is readable by
    /// everyone. A missing file means no sink is configured.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Secrets> {
        let Some(path) = path else {
            return Ok(Secrets::default());
        };
        warn_if_world_readable(path);
        let raw = read_secrets(path)?;
        let nonempty =
            |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        let postgres = match nonempty(raw.PG_DB_HOST) {
            None => None,
            Some(host) => {
                let port = match raw.PG_DB_PORT {
                    None => 5432,
                    Some(StringOrNumber::S(s)) if s.trim().is_empty() => 5432,
                    Some(StringOrNumber::S(s)) => s.trim().parse().ok().with_context(|| {
                        format!(
                            "secrets file {}: PG_DB_PORT is not a port number (1 to 65535)",
                            path.display()
                        )
                    })?,
                    Some(StringOrNumber::N(n)) => u16::try_from(n).ok().with_context(|| {
                        format!(
                            "secrets file {}: PG_DB_PORT is not a port number (1 to 65535)",
                            path.display()
                        )
                    })?,
                };
                let dbname = nonempty(raw.PG_DB_NAME).with_context(|| {
                    format!(
                        "secrets file {}: PG_DB_HOST is set but PG_DB_NAME is missing",
                        path.display()
                    )
                })?;
                let user = nonempty(raw.PG_DB_USER).with_context(|| {
                    format!(
                        "secrets file {}: PG_DB_HOST is set but PG_DB_USER is missing",
                        path.display()
                    )
                })?;
                Some(PgSecrets {
                    host,
                    port,
                    dbname,
                    user,
                    password: raw.PG_DB_PASSWORD.unwrap_or_default(),
                    sslmode: nonempty(raw.PG_DB_SSLMODE),
                    sslrootcert: nonempty(raw.PG_DB_SSLROOTCERT).map(|p| {
                        let p = PathBuf::from(p);
                        if p.is_absolute() {
                            p
                        } else {
                            path.parent().unwrap_or(Path::new(".")).join(p)
                        }
                    }),
                })
            }
        };
        let webpubsub = raw
            .AZURE_WEBPUBSUB_CONNECTION_STRING
            .filter(|s| !s.expose().trim().is_empty());
        Ok(Secrets {
            postgres,
            webpubsub,
        })
    }
}

/// Reads `secrets.json` without ever quoting it: serde's messages echo the
/// value they refuse (`invalid type: integer `12345``), so the JSON syntax is
/// checked first (syntax errors quote no value), then every key's type, and
/// errors name only the file, the position or the key.
fn read_secrets(path: &Path) -> anyhow::Result<RawSecrets> {
    let what = format!("secrets file {}", path.display());
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {what}"))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{what}:{}:{}: not valid JSON (fix the JSON at line {}, column {}; values are not shown)",
            e.line(),
            e.column(),
            e.line(),
            e.column()
        )
    })?;
    let serde_json::Value::Object(map) = &value else {
        bail!("{what}: must be a JSON object such as {{\"PG_DB_HOST\": \"…\"}}");
    };
    for (key, v) in map {
        let ok = match v {
            serde_json::Value::String(_) | serde_json::Value::Null => true,
            serde_json::Value::Number(n) => key == "PG_DB_PORT" && n.is_u64(),
            _ => false,
        };
        if !ok {
            let expected = if key == "PG_DB_PORT" {
                "a port number or a string"
            } else {
                "a string in double quotes"
            };
            bail!(
                "{what}: the value of {key} must be {expected} (the value is not shown, as it may be a secret)"
            );
        }
    }
    // Only keys remain to refuse (`unknown field `X``): no value is quoted.
    serde_json::from_value(value).map_err(|e| anyhow::anyhow!("{what}: {e}"))
}

/// Logs a warning when `path` can be read by every user.
pub fn warn_if_world_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o004 != 0 {
            tracing::warn!(
                file = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "secrets file is world-readable; run chmod 600 {} (or 640 with group hxlog)",
                path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(dir: &Path) -> Env {
        Env {
            use_mock_sensors: None,
            xdg_data_home: None,
            cwd: dir.to_path_buf(),
        }
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::File::create(&p)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        p
    }

    #[test]
    fn the_example_config_parses_and_documents_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/hxlog.example.json");
        let raw: RawConfig = read_json(&path, "example config").unwrap();
        let doc: serde_json::Value = read_json(&path, "example config").unwrap();
        let documented = doc["_comment"].as_object().unwrap();
        for key in doc.as_object().unwrap().keys().filter(|k| *k != "_comment") {
            assert!(
                documented.contains_key(key),
                "{key} is not documented in _comment"
            );
        }
        assert_eq!(
            doc.as_object().unwrap().len() - 1,
            24,
            "every RawConfig key appears in the example"
        );
        assert_eq!(raw.interval.as_deref(), Some("30s"));
    }

    #[test]
    fn defaults_work_on_a_laptop() {
        let dir = tempfile::tempdir().unwrap();
        let c = RawConfig::default()
            .resolve(None, &env(dir.path()))
            .unwrap();
        assert_eq!(c.interval, Duration::from_secs(30));
        assert_eq!(c.data_dir, dir.path().join("hxlog-data"));
        assert_eq!(c.sensor_source, SensorSource::Auto);
        assert!(!c.device_id.is_empty());
        assert_eq!(c.webpubsub_hub, "heatexchanger");
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "map.json",
            r#"{"T1":"28-000000000001","T2":"28-000000000002"}"#,
        );
        let cfg = write(
            dir.path(),
            "hxlog.json",
            r#"{"data_dir":"data","devicenames":"map.json","interval":"5s"}"#,
        );
        let c = Config::load(Some(&cfg)).unwrap();
        assert_eq!(c.data_dir, dir.path().join("data"));
        assert_eq!(c.interval, Duration::from_secs(5));
        assert_eq!(
            c.sensors.mapping[0],
            ("T1".to_string(), "28-000000000001".to_string())
        );
    }

    #[test]
    fn malformed_json_names_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = write(dir.path(), "hxlog.json", "{\n  \"interval\": \"5s\",\n}");
        let err = format!("{:#}", Config::load(Some(&cfg)).unwrap_err());
        assert!(err.contains("hxlog.json:3:1"), "{err}");
        let cfg = write(dir.path(), "unknown.json", r#"{"intervall":"5s"}"#);
        let err = format!("{:#}", Config::load(Some(&cfg)).unwrap_err());
        assert!(err.contains("unknown field `intervall`"), "{err}");
    }

    #[test]
    fn every_duration_and_count_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let check = |json: &str, refusal: Option<&str>| {
            let cfg = write(dir.path(), "hxlog.json", json);
            match (Config::load(Some(&cfg)), refusal) {
                (Ok(_), None) => {}
                (Err(e), Some(part)) => {
                    let e = format!("{e:#}");
                    assert!(e.contains(part) && e.contains("hxlog.json"), "{json}: {e}");
                }
                (got, _) => panic!("{json}: expected {refusal:?}, got {:?}", got.err()),
            }
        };
        check(r#"{"retention":"5000000d"}"#, Some("between 1h and 3650d"));
        check(r#"{"retention":"3650d"}"#, None);
        check(r#"{"retention":"10m"}"#, Some("\"retention\" is \"10m\""));
        check(r#"{"interval":"500ms"}"#, Some("between 1s and 1d"));
        check(r#"{"interval":"2d"}"#, Some("hxlog-sample.timer"));
        check(r#"{"interval":"1d"}"#, None);
        check(r#"{"retry_max":"1000w"}"#, Some("\"retry_max\""));
        check(r#"{"retry_max":"0s"}"#, Some("\"retry_max\""));
        check(r#"{"webpubsub_timeout":"1h"}"#, Some("between 1s and 10m"));
        check(
            r#"{"webpubsub_timeout":"0s"}"#,
            Some("\"webpubsub_timeout\""),
        );
        check(r#"{"read_retries":4000000000}"#, Some("between 0 and 10"));
        check(r#"{"read_retries":10}"#, None);
        check(r#"{"postgres_batch_size":0}"#, Some("between 1 and 100000"));
        check(
            r#"{"postgres_batch_size":18446744073709551615}"#,
            Some("between 1 and 100000"),
        );
    }

    #[test]
    fn use_mock_sensors_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        for (value, expected) in [
            (Some("true"), Ok(SensorSource::Mock)),
            (Some("FALSE"), Ok(SensorSource::W1)),
            (Some(""), Ok(SensorSource::W1)),
            (None, Ok(SensorSource::W1)),
            (Some("yes please"), Err(())),
        ] {
            let raw = RawConfig {
                sensor_source: Some(SensorSource::W1),
                ..Default::default()
            };
            let mut e = env(dir.path());
            e.use_mock_sensors = value.map(str::to_string);
            let got = raw
                .resolve(None, &e)
                .map(|c| c.sensor_source)
                .map_err(|_| ());
            assert_eq!(got, expected, "{value:?}");
        }
    }

    #[test]
    fn devicenames_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        for (text, ok) in [
            (r#"{"T1":"28-0316a2790a3f"}"#, true),
            (r#"{"T1":" 28-0316A2790A3F "}"#, true),
            (r#"{"T1":"28-0316A2790A3F","T2":"28-0316a2790a3f"}"#, false),
            (r#"{"T1":"not-an-id"}"#, false),
            (r#"{"T1":28}"#, false),
            (r#"{"T1":"28-01","T2":"28-01"}"#, false),
            (r#"{"T1":"28-01",}"#, false),
        ] {
            let p = write(dir.path(), "d.json", text);
            assert_eq!(load_devicenames(&p).is_ok(), ok, "{text}");
        }
    }

    #[test]
    fn names_are_short_and_printable() {
        let dir = tempfile::tempdir().unwrap();
        let long = "x".repeat(65);
        let max = "é".repeat(64);
        for (device_id, role, refusal) in [
            ("hx-01", "T1", None),
            (max.as_str(), max.as_str(), None),
            ("hx 01 Halle 3", "hot inlet", None),
            (long.as_str(), "T1", Some("hxlog.json: \"device_id\"")),
            ("hx\u{0}01", "T1", Some("hxlog.json: \"device_id\"")),
            ("hx\t01", "T1", Some("control character")),
            ("hx-01", long.as_str(), Some("d.json: the role name")),
            ("hx-01", "T1\u{7}", Some("d.json: the role name")),
            ("hx-01", "T\n1", Some("control character")),
        ] {
            write(
                dir.path(),
                "d.json",
                &serde_json::json!({ role: "28-0316a2790a3f" }).to_string(),
            );
            let cfg = write(
                dir.path(),
                "hxlog.json",
                &serde_json::json!({ "device_id": device_id, "devicenames": "d.json" }).to_string(),
            );
            match (Config::load(Some(&cfg)), refusal) {
                (Ok(_), None) => {}
                (Err(e), Some(part)) => {
                    let e = format!("{e:#}");
                    assert!(e.contains(part), "{device_id:?} {role:?}: {e}");
                }
                (got, _) => panic!(
                    "{device_id:?} {role:?}: expected {refusal:?}, got {:?}",
                    got.err()
                ),
            }
        }
    }

    #[test]
    fn secrets_parse_the_seed_format_and_never_print() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "secrets.json",
            r#"{"PG_DB_HOST":"db.example","PG_DB_NAME":"hx","PG_DB_USER":"logger","PG_DB_PASSWORD":"hunter2-secret","PG_DB_PORT":"6543","AZURE_WEBPUBSUB_CONNECTION_STRING":"Endpoint=https://x;AccessKey=k3y-secret;Version=1.0;"}"#,
        );
        let s = Secrets::load(Some(&p)).unwrap();
        let pg = s.postgres.as_ref().unwrap();
        assert_eq!(pg.port, 6543);
        assert_eq!(pg.password.expose(), "hunter2-secret");
        let shown = format!("{s:?} {}", pg.password);
        assert!(
            !shown.contains("hunter2") && !shown.contains("k3y"),
            "{shown}"
        );

        // the old README's template: empty values mean "not configured"
        let p = write(
            dir.path(),
            "empty.json",
            r#"{"PG_DB_HOST":"","PG_DB_NAME":"","PG_DB_PASSWORD":"","PG_DB_PORT":"","PG_DB_USER":"","AZURE_WEBPUBSUB_CONNECTION_STRING":""}"#,
        );
        let s = Secrets::load(Some(&p)).unwrap();
        assert!(s.postgres.is_none() && s.webpubsub.is_none());

        let p = write(
            dir.path(),
            "port.json",
            r#"{"PG_DB_HOST":"h","PG_DB_NAME":"d","PG_DB_USER":"u","PG_DB_PORT":5433}"#,
        );
        assert_eq!(
            Secrets::load(Some(&p)).unwrap().postgres.unwrap().port,
            5433
        );
        let p = write(
            dir.path(),
            "bad.json",
            r#"{"PG_DB_HOST":"h","PG_DB_USER":"u"}"#,
        );
        let err = format!("{:#}", Secrets::load(Some(&p)).unwrap_err());
        assert!(err.contains("PG_DB_NAME is missing"), "{err}");
    }

    #[test]
    fn no_value_of_the_secrets_file_appears_in_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let base = r#""PG_DB_HOST":"h","PG_DB_NAME":"d","PG_DB_USER":"u""#;
        for (body, names) in [
            (
                format!("{{{base},\"PG_DB_PASSWORD\":98765432}}"),
                "PG_DB_PASSWORD",
            ),
            (
                format!("{{{base},\"PG_DB_PASSWORD\":[\"98765432\"]}}"),
                "PG_DB_PASSWORD",
            ),
            (
                format!("{{{base},\"PG_DB_PASSWORD\":true}}"),
                "PG_DB_PASSWORD",
            ),
            (
                format!("{{{base},\"PG_DB_PASSWORD\":98765432.5}}"),
                "PG_DB_PASSWORD",
            ),
            (format!("{{{base},\"PG_DB_PORT\":98765432}}"), "PG_DB_PORT"),
            (
                format!("{{{base},\"PG_DB_PORT\":\"98765432\"}}"),
                "PG_DB_PORT",
            ),
            (format!("{{{base},\"PG_DB_PORT\":-98765432}}"), "PG_DB_PORT"),
            (
                r#"{"AZURE_WEBPUBSUB_CONNECTION_STRING":{"k":"98765432"}}"#.to_string(),
                "AZURE_WEBPUBSUB_CONNECTION_STRING",
            ),
            (
                format!("{{{base},\"PG_DB_PASSWORD\":\"98765432\" \"x\"}}"),
                "line 1",
            ),
            ("[\"98765432\"]".to_string(), "JSON object"),
        ] {
            let p = write(dir.path(), "secrets.json", &body);
            let err = format!("{:#}", Secrets::load(Some(&p)).unwrap_err());
            assert!(!err.contains("98765432"), "{body}: {err}");
            assert!(
                err.contains(names) && err.contains("secrets.json"),
                "{body}: {err}"
            );
        }
    }
}

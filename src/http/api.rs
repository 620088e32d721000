//! `GET /api/samples` (the chart's downsampled window), `GET /api/current`
//! (the newest sample, health, sinks, alarms) and `GET /api/export.csv`
//! (the window as `hxlog export` writes it, streamed). Every parameter is
//! checked: a bad one is a 400 with a message; every answer is bounded.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{ApiError, CancelOnDrop, Ctx, Stop, read_error};
use crate::outbox::{Outbox, Stored};
use crate::output::{csv_header, csv_row, sample_json};
use crate::when::parse_when;

/// Default number of points (buckets) of `/api/samples`.
pub const DEFAULT_POINTS: usize = 1000;
/// Bounds of `max_points`.
pub const POINTS: std::ops::RangeInclusive<usize> = 2..=5000;
/// Most rows of one CSV download.
pub const MAX_CSV_ROWS: u64 = 100_000;
/// Longest a CSV download may take, its transfer included; then the scan
/// stops and the connection is cut (no final chunk: a client sees it short).
pub const CSV_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes of CSV per chunk of the body.
const CSV_CHUNK: usize = 64 * 1024;
/// A chunk's buffer: room for the csv writer's last flush (8 KiB) past
/// [`CSV_CHUNK`], so that it never grows (a `Bytes` keeps all its capacity).
const CSV_CHUNK_CAPACITY: usize = CSV_CHUNK + 8 * 1024;
/// Rows of one page of an HTTP scan (`Outbox::for_each_in_window` reads
/// 10,000): a scan holds one page in memory.
const SCAN_PAGE: usize = 1000;
/// Chunks queued between the scan and the connection; the scan waits when
/// the client reads slower (memory per download: about 5 × [`CSV_CHUNK`]).
const CSV_QUEUE: usize = 4;

type Params = Query<Vec<(String, String)>>;

/// The window `[since, until)` of a request: `since` default 24 h before
/// now, `until` default now; both in `hxlog export`'s forms.
fn window(
    params: &[(String, String)],
    allowed: &[&str],
) -> Result<(Timestamp, Timestamp), ApiError> {
    let mut seen = BTreeMap::new();
    for (k, v) in params {
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::bad(format!(
                "unknown parameter {k:?}; this endpoint takes {}",
                allowed.join(", ")
            )));
        }
        if seen.insert(k.as_str(), v.as_str()).is_some() {
            return Err(ApiError::bad(format!("parameter {k:?} given twice")));
        }
    }
    let now = Timestamp::now();
    let when = |key: &str, default: Timestamp| -> Result<Timestamp, ApiError> {
        match seen.get(key) {
            None | Some(&"") => Ok(default),
            Some(v) => parse_when(v, now).map_err(|e| ApiError::bad(format!("{key}={v:?}: {e:#}"))),
        }
    };
    let since = when("since", now - SignedDuration::from_hours(24))?;
    let until = when("until", now)?;
    if since >= until {
        return Err(ApiError::bad(format!(
            "since ({since}) must be before until ({until})"
        )));
    }
    Ok((since, until))
}

fn max_points(params: &[(String, String)]) -> Result<usize, ApiError> {
    let Some((_, v)) = params.iter().find(|(k, _)| k == "max_points") else {
        return Ok(DEFAULT_POINTS);
    };
    match v.parse::<usize>() {
        Ok(n) if POINTS.contains(&n) => Ok(n),
        _ => Err(ApiError::bad(format!(
            "max_points={v:?}: give a whole number from {} to {}",
            POINTS.start(),
            POINTS.end()
        ))),
    }
}

/// Min and max of one series over the samples of a bucket.
#[derive(Debug, Clone, Copy, Default)]
struct MinMax(Option<(f64, f64)>);

impl MinMax {
    fn add(&mut self, v: Option<f64>) {
        if let Some(v) = v {
            self.0 = Some(match self.0 {
                None => (v, v),
                Some((lo, hi)) => (lo.min(v), hi.max(v)),
            });
        }
    }
}

/// The downsampled window: `buckets` equal buckets over `[since, until)`,
/// each with the min and max of every series, or one point per sample when
/// there are no more samples than buckets.
#[derive(Debug)]
pub struct Downsampled {
    /// Bucket width in seconds (0: one point per sample).
    pub bucket_seconds: f64,
    /// Bucket start (or sample time), Unix seconds.
    pub t: Vec<f64>,
    /// Per series (roles, then `effectiveness`).
    pub series: Vec<Series>,
}

/// One downsampled series: its name, the min and the max per point (`None`
/// where the bucket holds no value).
#[derive(Debug)]
pub struct Series {
    /// A role or `effectiveness`.
    pub name: String,
    /// Min per point.
    pub min: Vec<Option<f64>>,
    /// Max per point.
    pub max: Vec<Option<f64>>,
}

/// The samples of `[since, until)` in time order, as `hxlog export` reads
/// them, a page of [`SCAN_PAGE`] at a time; gives up at `stop`.
fn scan(
    outbox: &Outbox,
    since: Timestamp,
    until: Timestamp,
    stop: &Stop,
    mut f: impl FnMut(&Stored) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut after = None;
    loop {
        let page = outbox.window(Some(since), Some(until), after, SCAN_PAGE)?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = Some((last.sample.taken_at.as_microsecond(), last.seq));
        for s in &page {
            stop.row()?;
            f(s)?;
        }
    }
}

fn values(s: &Stored, roles: &[String]) -> Vec<Option<f64>> {
    let mut v: Vec<Option<f64>> = roles.iter().map(|r| s.sample.celsius(r)).collect();
    v.push(s.sample.efficiency.effectiveness);
    v
}

/// Downsamples `[since, until)` of `outbox` (see [`Downsampled`]); gives up
/// with [`super::TimedOut`] at `stop`.
pub fn downsample(
    outbox: &Outbox,
    roles: &[String],
    since: Timestamp,
    until: Timestamp,
    count: u64,
    buckets: usize,
    stop: &Stop,
) -> anyhow::Result<Downsampled> {
    let n = roles.len() + 1;
    let mut names: Vec<String> = roles.to_vec();
    names.push("effectiveness".into());
    let mut t = vec![];
    let mut cols: Vec<Vec<MinMax>> = vec![vec![]; n];
    let raw = count <= buckets as u64;
    let span = (until.as_microsecond() - since.as_microsecond()) as f64;
    let width_us = span / buckets as f64;
    let mut current: Option<usize> = None;
    scan(outbox, since, until, stop, |s| {
        let us = s.sample.taken_at.as_microsecond();
        let point = if raw {
            t.push(us as f64 / 1e6);
            t.len() - 1
        } else {
            let b = (((us - since.as_microsecond()) as f64 / width_us) as usize).min(buckets - 1);
            if current != Some(b) {
                t.push((since.as_microsecond() as f64 + b as f64 * width_us) / 1e6);
                current = Some(b);
            }
            t.len() - 1
        };
        for (i, v) in values(s, roles).into_iter().enumerate() {
            if cols[i].len() <= point {
                cols[i].resize(point + 1, MinMax::default());
            }
            cols[i][point].add(v);
        }
        Ok(())
    })?;
    let series = names
        .into_iter()
        .zip(cols)
        .map(|(name, mut col)| {
            col.resize(t.len(), MinMax::default());
            Series {
                min: col.iter().map(|m| m.0.map(|x| x.0)).collect(),
                max: col.iter().map(|m| m.0.map(|x| x.1)).collect(),
                name,
            }
        })
        .collect();
    Ok(Downsampled {
        bucket_seconds: if raw { 0.0 } else { width_us / 1e6 },
        t,
        series,
    })
}

/// `GET /api/samples?since=&until=&max_points=`.
pub async fn samples(
    State(ctx): State<Arc<Ctx>>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let (since, until) = window(&params, &["since", "until", "max_points"])?;
    let buckets = max_points(&params)?;
    let body = ctx
        .read_scan(move |ctx, o, stop| {
            let (count, mock) = o.count_in(since, until)?;
            let d = downsample(o, &ctx.settings.roles, since, until, count, buckets, stop)?;
            let mut min = serde_json::Map::new();
            let mut max = serde_json::Map::new();
            let mut names = vec![];
            for x in d.series {
                min.insert(x.name.clone(), json!(x.min));
                max.insert(x.name.clone(), json!(x.max));
                names.push(x.name);
            }
            Ok(json!({
                "since": since.to_string(),
                "until": until.to_string(),
                "samples": count,
                "mock": mock,
                "bucket_seconds": d.bucket_seconds,
                "series": names,
                "t": d.t,
                "min": min,
                "max": max,
            }))
        })
        .await?;
    Ok(Json(body).into_response())
}

/// `GET /api/current`: what the top of the dashboard shows.
pub async fn current(State(ctx): State<Arc<Ctx>>) -> Result<Response, ApiError> {
    let body = ctx
        .read(|ctx, o| {
            let s = &ctx.settings;
            let verdict = ctx.verdict(o)?;
            let last = o.last()?;
            let names: Vec<&str> = s.sinks.iter().map(String::as_str).collect();
            let status = o.status(&names)?;
            let sinks: Vec<Value> = status
                .sinks
                .iter()
                .map(|k| {
                    let mut v = serde_json::to_value(k).unwrap_or(Value::Null);
                    v["configured"] = json!(s.sinks.contains(&k.name));
                    v
                })
                .collect();
            Ok(json!({
                "device_id": s.device_id,
                "version": env!("CARGO_PKG_VERSION"),
                "now": Timestamp::now().to_string(),
                "interval_seconds": s.interval.as_secs_f64(),
                "roles": s.roles,
                "health": verdict,
                "sample": last.as_ref().map(sample_json),
                "sinks": sinks,
                "alarms": o.active_alarms()?,
            }))
        })
        .await?;
    Ok(Json(body).into_response())
}

/// `GET /api/export.csv?since=&until=`: `hxlog export`'s CSV of the window,
/// refused (400) above [`MAX_CSV_ROWS`] rows. The rows are streamed as they
/// are read: memory stays at a few chunks whatever the window.
pub async fn export_csv(
    State(ctx): State<Arc<Ctx>>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let (since, until) = window(&params, &["since", "until"])?;
    let (counted_tx, counted) = oneshot::channel();
    let (chunks_tx, chunks) = mpsc::channel(CSV_QUEUE);
    let deadline = Instant::now() + ctx.csv_timeout;
    let stop = Stop::new(deadline);
    let cancel = stop.cancel_on_drop();
    let runtime = tokio::runtime::Handle::current();
    let task = ctx.spawn_read(stop, move |ctx, o, stop| {
        let (count, _) = o.count_in(since, until)?;
        if count > MAX_CSV_ROWS {
            let _ = counted_tx.send(Err(count));
            return Ok(());
        }
        if counted_tx.send(Ok(())).is_err() {
            return Ok(()); // the request is gone
        }
        let roles = &ctx.settings.roles;
        let mut w = csv::Writer::from_writer(Chunks {
            buf: Vec::with_capacity(CSV_CHUNK_CAPACITY),
            tx: chunks_tx,
            runtime,
            deadline: deadline.into(),
        });
        w.write_record(csv_header(roles))?;
        scan(o, since, until, stop, |s| {
            w.write_record(csv_row(s, roles))?;
            Ok(())
        })?;
        let mut chunks = w
            .into_inner()
            .map_err(|e| anyhow::anyhow!("{}", e.error()))?;
        chunks.send()?;
        Ok(())
    })?;
    match counted.await {
        Ok(Ok(())) => {}
        Ok(Err(count)) => {
            return Err(ApiError::bad(format!(
                "the window holds {count} samples, more than {MAX_CSV_ROWS}; narrow it or use hxlog export"
            )));
        }
        // the read failed before it counted
        Err(_) => {
            return Err(match task.await {
                Ok(Err(e)) => read_error(e),
                Ok(Ok(())) => ApiError::unavailable("the CSV download ended early"),
                Err(e) => ApiError::unavailable(format!("request failed: {e}")),
            });
        }
    }
    let name = format!(
        "attachment; filename=\"hxlog-{}-{}.csv\"",
        since.strftime("%Y%m%dT%H%M%SZ"),
        until.strftime("%Y%m%dT%H%M%SZ")
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, name),
        ],
        Body::from_stream(csv_body(chunks, task, cancel)),
    )
        .into_response())
}

/// The CSV scan's writer: hands the bytes to the response body in chunks of
/// [`CSV_CHUNK`], waiting (until `deadline`) while the queue is full.
struct Chunks {
    buf: Vec<u8>,
    tx: mpsc::Sender<Bytes>,
    runtime: tokio::runtime::Handle,
    deadline: tokio::time::Instant,
}

impl Chunks {
    /// Sends what is buffered.
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CSV_CHUNK_CAPACITY),
        ));
        let sent = self
            .runtime
            .block_on(tokio::time::timeout_at(self.deadline, self.tx.send(chunk)));
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the client went away",
            )),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the CSV download took too long",
            )),
        }
    }
}

impl io::Write for Chunks {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CSV_CHUNK {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The body: the chunks as they come, then an error unless the scan ended
/// well (hyper then cuts the connection without the final chunk). Dropping
/// it (client gone, shutdown) cancels the scan.
fn csv_body(
    chunks: mpsc::Receiver<Bytes>,
    task: JoinHandle<anyhow::Result<()>>,
    cancel: CancelOnDrop,
) -> impl futures_util::Stream<Item = io::Result<Bytes>> + Send {
    futures_util::stream::unfold(
        (chunks, Some(task), cancel),
        |(mut chunks, mut task, cancel)| async move {
            if let Some(chunk) = chunks.recv().await {
                return Some((Ok(chunk), (chunks, task, cancel)));
            }
            let failed = match task.take()?.await {
                Ok(Ok(())) => return None,
                Ok(Err(e)) => format!("{e:#}"),
                Err(e) => e.to_string(),
            };
            tracing::warn!(error = %failed, "a CSV download stopped short");
            Some((Err(io::Error::other(failed)), (chunks, task, cancel)))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn bad_parameters_are_refused_with_a_message() {
        let all = ["since", "until", "max_points"];
        let check = |pairs: &[(&str, &str)], needle: &str| {
            let params = p(pairs);
            let e = window(&params, &all)
                .and_then(|_| max_points(&params))
                .unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
            assert!(e.message.contains(needle), "{pairs:?}: {}", e.message);
        };
        check(&[("since", "yesterday")], "since=\"yesterday\"");
        check(&[("since", "1h"), ("until", "2h")], "must be before");
        check(&[("max_points", "1")], "from 2 to 5000");
        check(&[("max_points", "5001")], "from 2 to 5000");
        check(&[("max_points", "-3")], "from 2 to 5000");
        check(&[("limit", "3")], "unknown parameter \"limit\"");
        check(&[("since", "1h"), ("since", "2h")], "given twice");
        assert_eq!(max_points(&p(&[("max_points", "2")])).unwrap(), 2);
        assert!(window(&p(&[("since", "7d"), ("until", "")]), &all).is_ok());
    }
}

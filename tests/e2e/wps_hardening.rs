//! Hardening of the Web PubSub sink and of sink configuration, through the
//! built binary against the fake service (issue 9): a sink configured wrongly
//! never stops sampling; `Retry-After: 0` never makes a tight loop; hub and
//! group names follow the service's rules; `http://` only to loopback; a new
//! sink can start from now; one refused message refuses only its own samples,
//! one refused alarm event only itself (the sink names it; the forwarder skips only it).

use std::time::Duration;

use serde_json::json;

use crate::logger::{Logger, terminate, wait_until};
use crate::pg::TestDb;
use crate::wps_server::{self, Fault, TestServer};

const KEY: &str = "aGFyZGVuaW5nLXRlc3Qta2V5LTdmM2E=";
const HUB: &str = "heatexchanger";

/// Writes `secrets.json` with this Web PubSub connection string and, when
/// given, the test database.
fn write_secrets(l: &Logger, conn: &str, db: Option<&TestDb>) {
    let wps = ("AZURE_WEBPUBSUB_CONNECTION_STRING", conn);
    match db {
        Some(db) => {
            db.write_secrets(l.path(), None, &[wps, ("PG_DB_SSLMODE", "disable")]);
        }
        None => {
            use std::os::unix::fs::PermissionsExt;
            let m = json!({ wps.0: wps.1 });
            let p = l.path().join("secrets.json");
            std::fs::write(&p, m.to_string()).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_configured_wrongly_never_stops_sampling() {
    // Postgres when the machine has it: the other sink must keep working.
    let db = TestDb::create();
    let l = Logger::new(json!({}));
    let no_key = "Endpoint=https://x.webpubsub.azure.com;Version=1.0;";
    write_secrets(&l, no_key, db.as_ref());
    let mut child = l.spawn_run();
    tokio::task::block_in_place(|| {
        wait_until(
            Duration::from_secs(60),
            "run samples although the Web PubSub connection string has no AccessKey",
            || l.path().join("data").exists() && l.samples() >= 3,
        );
        if let Some(db) = &db {
            wait_until(
                Duration::from_secs(60),
                "Postgres receives samples while Web PubSub is configured wrongly",
                || db.samples() >= 3,
            );
        }
    });
    assert!(terminate(&mut child, hxlog_test_support::SIGTERM_DEADLINE).success());
    let log = std::fs::read_to_string(l.log_path()).unwrap();
    assert!(
        log.lines().any(|line| line.contains("ERROR")
            && line.contains("webpubsub")
            && line.contains("NOT FORWARDING")
            && line.contains("AccessKey")),
        "no loud error naming the sink and the cause:\n{log}"
    );

    // status shows the error, as text and as JSON
    let text = String::from_utf8(l.ok(&["status"]).stdout).unwrap();
    assert!(
        text.contains("CONFIGURATION ERROR") && text.contains("AccessKey"),
        "{text}"
    );
    let errors = &l.status()["sink_config_errors"];
    assert!(
        errors["webpubsub"].as_str().unwrap().contains("AccessKey"),
        "{errors}"
    );
    assert_eq!(errors.get("postgres"), None, "{errors}");
    // its samples are kept for it
    assert_eq!(
        l.sink("webpubsub")["pending"].as_u64(),
        Some(l.samples()),
        "samples not kept for the misconfigured sink"
    );

    // replay for that sink fails clearly; a plain replay still delivers to
    // the other sink (in timer mode it is the only forwarder) and then fails
    l.ok(&["simulate", "--count", "5"]);
    for args in [&["replay", "--sink", "webpubsub"][..], &["replay"]] {
        let out = l.output(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = stderr(&out);
        assert!(
            err.contains("webpubsub is configured wrongly") && err.contains("AccessKey"),
            "{args:?}: {err}"
        );
    }
    if let Some(db) = &db {
        assert_eq!(db.samples() as u64, l.samples());
        assert_eq!(l.sink("postgres")["pending"], 0);
    }
}

async fn server() -> TestServer {
    wps_server::start(HUB, KEY).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_zero_or_in_the_past_is_not_a_tight_loop() {
    for (header, value) in [
        ("retry-after", "0"),
        ("retry-after-ms", "0"),
        ("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT"),
    ] {
        let srv = server().await;
        // retry_max 1s: the schedule waits 50 ms to 1 s between attempts
        let l = Logger::new(json!({}));
        write_secrets(&l, &srv.connection_string(), None);
        l.ok(&["simulate", "--count", "3"]);
        let fault = Fault::UnavailableRetryAfter {
            header,
            value: value.into(),
        };
        srv.inject(fault, 100_000);
        let out = l.output(&["replay", "--give-up-after", "3s"]);
        assert!(!out.status.success(), "{header}: {value}: replay succeeded");
        let requests = srv.request_count();
        assert!(
            (2..=30).contains(&requests),
            "{header}: {value}: {requests} requests in 3 s"
        );
        let s = l.sink("webpubsub");
        assert_eq!(s["pending"], 3, "{s}");
        assert_eq!(s["last_error_class"], "transient", "{s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_names_follow_the_services_rules() {
    let srv = server().await;
    for group in ["hx-01", "Halle 3/Linie ü?#%"] {
        let l = Logger::new(json!({ "webpubsub_group": group }));
        write_secrets(&l, &srv.connection_string(), None);
        l.ok(&["simulate", "--count", "2"]);
        l.ok(&["replay"]);
        let accepted = srv.accepted();
        let last = accepted.last().expect("a message was accepted");
        assert_eq!(last.group.as_deref(), Some(group));
    }
    assert!(srv.refusals().is_empty(), "{:?}", srv.refusals());
    // what the service refuses is refused at start, with the rule
    let l = Logger::new(json!({ "webpubsub_group": "   " }));
    write_secrets(&l, &srv.connection_string(), None);
    l.ok(&["simulate", "--count", "1"]);
    let out = l.output(&["replay"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("whitespace"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_only_to_loopback_and_the_proxy_variables_are_honoured() {
    let l = Logger::new(json!({}));
    l.ok(&["simulate", "--count", "2"]);
    // http:// elsewhere would send the token in clear text: a configuration error
    write_secrets(
        &l,
        &format!("Endpoint=http://192.0.2.10;AccessKey={KEY};Version=1.0;"),
        None,
    );
    let out = l.output(&["replay", "--give-up-after", "1s"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("clear text") && err.contains("use https://"),
        "{err}"
    );
    assert!(!err.contains(KEY), "the key leaked: {err}");
    let text = String::from_utf8(l.ok(&["status"]).stdout).unwrap();
    assert!(text.contains("clear text"), "{text}");

    // HTTP_PROXY is honoured: the endpoint is a closed port, the proxy is the fake service
    let srv = server().await;
    let closed = crate::pg::free_port();
    write_secrets(
        &l,
        &format!("Endpoint=http://127.0.0.1;Port={closed};AccessKey={KEY};Version=1.0;"),
        None,
    );
    let out = l
        .cmd(&["replay", "--give-up-after", "20s"])
        .env("HTTP_PROXY", format!("http://127.0.0.1:{}", srv.port()))
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(srv.accepted_ids().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_sink_starts_from_the_oldest_sample_or_from_now() {
    let srv = server().await;
    // T1 is always below 1000 °C: the one `sample` raises an alarm
    let l = Logger::new(json!({"alarms": {"roles": {"T1": {"min": 1000.0}}}}));
    l.ok(&["simulate", "--count", "49", "--interval", "1m"]);
    l.ok(&["sample"]);
    write_secrets(&l, &srv.connection_string(), None);
    let text = String::from_utf8(l.ok(&["status"]).stdout).unwrap();
    assert!(
        text.contains("new sink: starts from the oldest stored sample")
            && text.contains("replay --sink webpubsub --skip-to-now"),
        "{text}"
    );
    assert_eq!(sink_pending(&l), 50);
    // a first attempt fails (the sink now has a cursor at the start)
    srv.inject(Fault::Unauthorized, 1);
    assert!(!l.output(&["replay"]).status.success());
    let requests = srv.request_count();

    // --skip-to-now needs --sink
    let out = l.output(&["replay", "--skip-to-now"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--sink"), "{}", stderr(&out));

    let out = l.ok(&["replay", "--sink", "webpubsub", "--skip-to-now"]);
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(
        said.contains("skipped 50 samples and 1 alarm events"),
        "{said}"
    );
    assert_eq!(srv.request_count(), requests, "skipping sends nothing");
    assert_eq!(sink_pending(&l), 0);
    let text = String::from_utf8(l.ok(&["status"]).stdout).unwrap();
    assert!(!text.contains("new sink"), "{text}");

    // the next samples go out, the skipped ones stay in the outbox; the
    // skipped alarm event is not published (status still shows the alarm)
    l.ok(&["simulate", "--count", "3"]);
    l.ok(&["replay"]);
    assert_eq!(srv.accepted_ids().len(), 3);
    assert_eq!(alarm_messages(&srv), Vec::<String>::new());
    assert_eq!(l.samples(), 53);
    let text = String::from_utf8(l.ok(&["status"]).stdout).unwrap();
    assert!(text.contains("alarm:    min T1"), "{text}");
}

fn sink_pending(l: &Logger) -> u64 {
    l.sink("webpubsub")["pending"].as_u64().unwrap()
}

/// `n` samples one second apart.
fn batch(n: i64) -> Vec<hxlog::sample::Sample> {
    use hxlog::sample::{Reading, Sample, Source};
    (0..n)
        .map(|i| {
            let t = jiff::Timestamp::from_second(1_800_000_000 + i).unwrap();
            Sample::new("hx-01", t, Source::W1, vec![Reading::ok("T1", None, 50.0)])
        })
        .collect()
}

fn ids(samples: &[hxlog::sample::Sample]) -> Vec<String> {
    samples.iter().map(|s| s.id.to_string()).collect()
}

#[tokio::test]
async fn a_refused_message_refuses_only_its_own_samples() {
    use hxlog::sinks::webpubsub::{ConnectionString, WebPubSubSettings, WebPubSubSink};
    use hxlog::sinks::{Sink, SinkError};
    let srv = server().await;
    let conn = ConnectionString::parse(&srv.connection_string()).unwrap();
    let mut sink = WebPubSubSink::new(conn, WebPubSubSettings::default())
        .unwrap()
        .with_max_message_bytes(2 * 1024);
    let samples = batch(30);
    let sizes: Vec<usize> = hxlog::sinks::webpubsub::encode_messages(&samples, 2 * 1024)
        .iter()
        .map(|m| {
            serde_json::from_slice::<serde_json::Value>(m).unwrap()["samples"]
                .as_array()
                .unwrap()
                .len()
        })
        .collect();
    assert!(sizes.len() >= 3, "{sizes:?}");
    let (first, second) = (sizes[0], sizes[1]);

    // message 2 is refused: only its samples are; messages 1, 3, … are delivered
    srv.inject(Fault::Delay(Duration::ZERO), 1);
    srv.inject(Fault::BadRequest, 1);
    let SinkError::RejectedSamples { refused } = sink.send(&samples).await.unwrap_err() else {
        panic!("not RejectedSamples")
    };
    let refused_ids: Vec<String> = refused.iter().map(|r| r.id.to_string()).collect();
    assert_eq!(refused_ids, ids(&samples[first..first + second]));
    assert!(
        refused.iter().all(|r| r.reason.contains("InvalidMessage")),
        "{refused:?}"
    );
    let mut expected = ids(&samples[..first]);
    expected.extend(ids(&samples[first + second..]));
    assert_eq!(srv.accepted_ids(), expected);
    assert_eq!(srv.request_count(), sizes.len());

    // a refusal followed by an outage: the outage wins (the batch is sent again)
    srv.inject(Fault::BadRequest, 1);
    srv.inject(Fault::Unavailable, 1);
    let e = sink.send(&samples).await.unwrap_err();
    assert_eq!(e.class(), "transient", "{e}");

    // every message refused: the whole batch is
    srv.inject(Fault::BadRequest, sizes.len());
    let e = sink.send(&samples).await.unwrap_err();
    assert!(matches!(e, SinkError::Rejected { .. }), "{e:?}");
}

/// The alarm messages the fake service accepted, as `state alarm role`.
fn alarm_messages(srv: &TestServer) -> Vec<String> {
    srv.accepted_messages()
        .iter()
        .filter(|m| m["type"] == "hxlog.alarm")
        .map(|m| format!("{} {} {}", m["state"], m["alarm"], m["role"]).replace('"', ""))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_names_a_refused_alarm_event_and_an_outage_wins() {
    use hxlog::alarms::{AlarmKey, Event, Published};
    use hxlog::sinks::webpubsub::{ConnectionString, WebPubSubSettings, WebPubSubSink};
    use hxlog::sinks::{Sink, SinkError};
    let srv = server().await;
    let conn = ConnectionString::parse(&srv.connection_string()).unwrap();
    let mut sink = WebPubSubSink::new(conn, WebPubSubSettings::default()).unwrap();
    let alarms: Vec<Published> = ["T1", "T2", "T3"]
        .into_iter()
        .map(|role| Published {
            id: uuid::Uuid::now_v7(),
            device_id: "hx-01".into(),
            event: Event {
                key: AlarmKey {
                    alarm: "max".into(),
                    role: role.into(),
                },
                raised: true,
                at: jiff::Timestamp::from_second(1_800_000_000).unwrap(),
                value: Some(90.0),
                threshold: Some(80.0),
                message: format!("{role} above 80 °C: 90.000 °C"),
            },
        })
        .collect();
    // the second is refused: only it is named, the third is still sent
    srv.inject(Fault::Delay(Duration::ZERO), 1);
    srv.inject(Fault::BadRequest, 1);
    let SinkError::RejectedSamples { refused } = sink.send_alarms(&alarms).await.unwrap_err()
    else {
        panic!("not RejectedSamples")
    };
    assert_eq!(
        refused.iter().map(|r| r.id).collect::<Vec<_>>(),
        [alarms[1].id]
    );
    assert_eq!(alarm_messages(&srv), ["raised max T1", "raised max T3"]);
    // a refusal followed by an outage: the outage wins (all are sent again)
    srv.inject(Fault::BadRequest, 1);
    srv.inject(Fault::Unavailable, 1);
    let e = sink.send_alarms(&alarms).await.unwrap_err();
    assert_eq!(e.class(), "transient", "{e}");
    // every one refused: the whole batch is
    srv.inject(Fault::BadRequest, alarms.len());
    let e = sink.send_alarms(&alarms).await.unwrap_err();
    assert!(matches!(e, SinkError::Rejected { .. }), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_alarm_event_refuses_only_itself() {
    let srv = server().await;
    // mock temperatures are far below 1000 °C: one sample raises three alarms
    let below = json!({"min": 1000.0});
    let l = Logger::new(json!({
        "alarms": {"roles": {"T1": below, "T2": below, "T3": below}}
    }));
    write_secrets(&l, &srv.connection_string(), None);
    l.ok(&["sample"]);
    // the second alarm message is refused; the first and third are published
    srv.inject(Fault::Delay(Duration::ZERO), 1);
    srv.inject(Fault::BadRequest, 1);
    let out = l.ok(&["replay", "--give-up-after", "20s"]);
    assert_eq!(
        alarm_messages(&srv),
        ["raised min T1", "raised min T3"],
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("sink refused an alarm event") && stderr(&out).contains("role=T2"),
        "{}",
        stderr(&out)
    );
    assert_eq!(srv.refusals().len(), 1, "{:?}", srv.refusals());
    assert_eq!(srv.accepted_ids().len(), 1, "the sample went too");
    assert_eq!(l.sink("webpubsub")["last_error_class"], "rejected");
    // the cursor is past all three: nothing is sent again, nothing is pending
    let requests = srv.request_count();
    l.ok(&["replay", "--give-up-after", "20s"]);
    assert_eq!(srv.request_count(), requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_rejects_only_the_refused_messages_samples_and_exits_non_zero() {
    let srv = server().await;
    // Many long role names make samples big enough that a batch of 500 takes
    // several 256 KiB messages.
    let l = Logger::new(json!({ "devicenames": "devicenames.json" }));
    let roles: serde_json::Map<String, serde_json::Value> = (1..=16)
        .map(|i| {
            (
                format!("T{i}_heat_exchanger_inlet_temperature"),
                json!(format!("28-{i:012x}")),
            )
        })
        .collect();
    std::fs::write(
        l.path().join("devicenames.json"),
        serde_json::Value::Object(roles).to_string(),
    )
    .unwrap();
    write_secrets(&l, &srv.connection_string(), None);
    l.ok(&["simulate", "--count", "1500", "--interval", "10s"]);
    srv.inject(Fault::BadRequest, 1);
    let out = l.output(&["replay"]);
    assert!(
        !out.status.success(),
        "replay exited 0 with refused samples"
    );
    let s = l.sink("webpubsub");
    let refused = s["rejected_count"].as_u64().unwrap();
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{refused} samples refused by the sink")),
        "{err}"
    );
    // the refused message was the first of a batch of several messages
    let first_message = srv.refusals().len();
    assert_eq!(first_message, 1);
    assert!(
        refused > 0 && refused < 500,
        "{refused} refused: a whole batch"
    );
    assert_eq!(s["pending"], 0);
    let outbox: Vec<String> = {
        let out = l.ok(&["export", "--since", "30d", "--format", "jsonl"]);
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|line| {
                serde_json::from_str::<serde_json::Value>(line).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    assert_eq!(outbox.len(), 1500);
    // every sample but the refused message's reached the service, once, in order
    assert_eq!(srv.accepted_ids(), outbox[refused as usize..].to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    for fault in [
        Fault::TooManyRequests {
            retry_after_secs: 2,
        },
        Fault::UnavailableRetryAfter {
            header: "retry-after-ms",
            value: "2000".into(),
        },
    ] {
        let srv = server().await;
        // a cap well above the 2 s asked for: the schedule alone would wait
        // at most 500 ms before the second attempt
        let l = Logger::new(json!({ "retry_max": "30s" }));
        write_secrets(&l, &srv.connection_string(), None);
        l.ok(&["simulate", "--count", "3"]);
        srv.inject(fault.clone(), 1);
        l.ok(&["replay"]);
        let times = srv.request_times();
        assert_eq!(times.len(), 2, "{fault:?}: one refusal, one delivery");
        let waited = times[1] - times[0];
        assert!(
            waited >= Duration::from_secs(2),
            "{fault:?}: retried after {waited:?}, before the 2 s the service asked for"
        );
        assert_eq!(l.sink("webpubsub")["pending"], 0);
    }
}

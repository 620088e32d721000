//! The Web PubSub forwarder against the in-process fake service: steady
//! publishing, outage and batched catch-up, kill -9 mid catch-up, sinks
//! failing independently, bad keys, malformed connection strings, secrets.

use hxlog_test_support::SpawnGuarded;
use std::time::Duration;

use serde_json::{Value, json};

use crate::logger::{Logger, terminate, wait_until};
use crate::pg::TestDb;
use crate::proxy::Proxy;
use crate::wps_server::{self, Fault, TestServer};

const KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ-9f3a=";

fn write_secrets(l: &Logger, conn: &str, pg: Option<(&TestDb, u16)>) {
    let mut m = json!({ "AZURE_WEBPUBSUB_CONNECTION_STRING": conn });
    if let Some((db, port)) = pg {
        m["PG_DB_HOST"] = db.server.host.clone().into();
        m["PG_DB_PORT"] = port.into();
        m["PG_DB_NAME"] = db.name.clone().into();
        m["PG_DB_USER"] = db.server.user.clone().into();
        m["PG_DB_PASSWORD"] = "pg-pass-4d2b-secret".into();
        m["PG_DB_SSLMODE"] = "disable".into();
    }
    std::fs::write(l.path().join("secrets.json"), m.to_string()).unwrap();
}

/// The outbox's sample ids, oldest first.
fn outbox_ids(l: &Logger) -> Vec<String> {
    let out = l.ok(&["export", "--since", "30d", "--format", "jsonl"]);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Every id delivered at least once, first deliveries in outbox order.
fn assert_all_delivered_in_order(accepted: &[String], expected: &[String]) {
    let mut seen = std::collections::HashSet::new();
    let firsts: Vec<&String> = accepted
        .iter()
        .filter(|id| seen.insert((*id).clone()))
        .collect();
    let expected: Vec<&String> = expected.iter().collect();
    assert_eq!(
        firsts.len(),
        expected.len(),
        "ids delivered: {} of {}",
        firsts.len(),
        expected.len()
    );
    assert_eq!(firsts, expected, "first deliveries out of order");
}

async fn server() -> TestServer {
    wps_server::start("heatexchanger", KEY).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_each_sample_as_it_is_taken() {
    let srv = server().await;
    let l = Logger::new(json!({}));
    write_secrets(&l, &srv.connection_string(), None);
    let mut child = l.spawn_run();
    srv.wait_for_ids(3, Duration::from_secs(60)).await;
    assert!(terminate(&mut child, hxlog_test_support::SIGTERM_DEADLINE).success());
    for m in srv.accepted_messages() {
        wps_server::check_message(&m).unwrap();
        assert_eq!(
            m["samples"].as_array().unwrap().len(),
            1,
            "steady state is one sample per message: {m}"
        );
        assert_eq!(m["samples"][0]["mock"], true);
        assert_eq!(m["samples"][0]["source"], "mock");
    }
    let ids = outbox_ids(&l);
    let pending = l.sink("webpubsub")["pending"].as_u64().unwrap() as usize;
    assert_all_delivered_in_order(&srv.accepted_ids(), &ids[..ids.len() - pending]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_caught_up_in_batches_in_order() {
    let srv = server().await;
    let l = Logger::new(json!({}));
    write_secrets(&l, &srv.connection_string(), None);
    l.ok(&["simulate", "--count", "3000", "--interval", "10s"]);
    srv.stop().await;
    let out = l.output(&["replay", "--give-up-after", "2s"]);
    assert!(
        !out.status.success(),
        "replay must fail while the service is unreachable"
    );
    assert_eq!(l.sink("webpubsub")["last_error_class"], "transient");
    srv.restart().await;
    srv.inject(Fault::Unavailable, 3);
    srv.inject(
        Fault::TooManyRequests {
            retry_after_secs: 1,
        },
        1,
    );
    l.ok(&["replay"]);
    let ids = outbox_ids(&l);
    assert_all_delivered_in_order(&srv.accepted_ids(), &ids);
    let messages = srv.accepted_messages().len();
    assert!(
        messages <= 20,
        "3000 samples took {messages} messages: not batched"
    );
    for m in srv.accepted_messages() {
        assert!(m.to_string().len() <= 256 * 1024);
    }
    assert_eq!(l.sink("webpubsub")["pending"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_catch_up_loses_no_id() {
    let srv = server().await;
    let l = Logger::new(json!({}));
    write_secrets(&l, &srv.connection_string(), None);
    l.ok(&["simulate", "--count", "6000", "--interval", "1s"]);
    let unique = || {
        srv.accepted_ids()
            .into_iter()
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    let mut mid_drain = 0;
    for round in 0..8 {
        // slow responses make sure some kills land mid-request
        srv.inject(Fault::Delay(Duration::from_millis(150)), 2);
        let before = unique();
        let mut child = l
            .cmd(&["replay"])
            .stderr(std::process::Stdio::null())
            .spawn_guarded();
        if round % 2 == 0 {
            // a random point: start-up, the first request, or later
            tokio::time::sleep(Duration::from_millis(fastrand::u64(50..500))).await;
        } else {
            // once this replay got ids accepted, so the kill lands mid-drain
            // however slow the machine (or after the drain, if it finished)
            tokio::task::block_in_place(|| {
                wait_until(
                    Duration::from_secs(60),
                    "the replay gets ids accepted or ends",
                    || child.try_wait().unwrap().is_some() || unique() > before,
                )
            });
        }
        let _ = child.kill();
        let _ = child.wait();
        // at least once: ids may be accepted twice, so count distinct ones
        let after = unique();
        if after > before && after < 6000 {
            mid_drain += 1;
        }
    }
    assert!(
        mid_drain > 0,
        "no kill landed between the first and the last id; the test proves nothing"
    );
    srv.clear_faults();
    l.ok(&["replay"]);
    assert_all_delivered_in_order(&srv.accepted_ids(), &outbox_ids(&l));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_two_sinks_fail_independently() {
    let Some(db) = TestDb::create() else { return };
    let srv = server().await;
    let proxy = Proxy::start(format!("{}:{}", db.server.host, db.server.port), true);
    let l = Logger::new(json!({}));
    write_secrets(&l, &srv.connection_string(), Some((&db, proxy.port)));
    // Web PubSub down (503 storm): Postgres keeps up
    srv.inject(Fault::Unavailable, 100_000);
    let mut child = l.spawn_run();
    tokio::task::block_in_place(|| {
        wait_until(
            Duration::from_secs(60),
            "Postgres receives samples while Web PubSub fails",
            || db.samples() >= 4,
        );
    });
    assert!(srv.accepted_ids().is_empty());
    // now Postgres is cut and Web PubSub recovers: Web PubSub catches up
    proxy.cut();
    srv.clear_faults();
    let pg_before = db.samples();
    srv.wait_for_ids(6, Duration::from_secs(60)).await;
    tokio::task::block_in_place(|| {
        let n = l.samples();
        wait_until(
            Duration::from_secs(60),
            "Web PubSub catches up while Postgres is down",
            || srv.accepted_ids().len() as u64 + 1 >= n,
        );
    });
    assert!(db.samples() <= pg_before + 1, "Postgres was cut");
    proxy.restore();
    assert!(terminate(&mut child, hxlog_test_support::SIGTERM_DEADLINE).success());
    l.ok(&["replay"]);
    let ids = outbox_ids(&l);
    assert_eq!(db.samples() as usize, ids.len());
    assert_all_delivered_in_order(&srv.accepted_ids(), &ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_is_permanent_and_keeps_the_data() {
    let srv = server().await;
    let l = Logger::new(json!({}));
    write_secrets(&l, &srv.connection_string(), None);
    l.ok(&["simulate", "--count", "5"]);
    srv.inject(Fault::Unauthorized, 1);
    let out = l.output(&["replay"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("AZURE_WEBPUBSUB_CONNECTION_STRING"), "{err}");
    assert!(!err.contains(KEY));
    let s = l.sink("webpubsub");
    assert_eq!(s["last_error_class"], "permanent");
    assert_eq!(s["pending"], 5);
    l.ok(&["replay"]);
    assert_eq!(srv.accepted_ids().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_message_is_recorded_and_does_not_block_the_queue() {
    let srv = server().await;
    let l = Logger::new(json!({}));
    write_secrets(&l, &srv.connection_string(), None);
    l.ok(&["simulate", "--count", "3"]);
    srv.inject(Fault::BadRequest, 1);
    let out = l.output(&["replay"]);
    assert!(
        !out.status.success(),
        "replay exited 0 with refused samples"
    );
    let s = l.sink("webpubsub");
    assert_eq!(s["pending"], 0);
    assert_eq!(s["rejected_count"], 3);
    l.ok(&["simulate", "--count", "2"]);
    l.ok(&["replay"]);
    assert_eq!(srv.accepted_ids().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_connection_strings_are_clear_and_never_echo_the_key() {
    let l = Logger::new(json!({}));
    l.ok(&["simulate", "--count", "1"]);
    for (conn, names) in [
        (
            "Endpoint=https://x.webpubsub.azure.com;Version=1.0;".to_string(),
            "AccessKey",
        ),
        (format!("AccessKey={KEY};Version=1.0;"), "Endpoint"),
        (format!("Endpoint=ftp://x;AccessKey={KEY}"), "Endpoint"),
        (
            format!("Endpoint=http://127.0.0.1;Port=notaport;AccessKey={KEY}"),
            "Port",
        ),
    ] {
        write_secrets(&l, &conn, None);
        // `run` samples anyway (see wps_hardening); `replay` refuses and
        // `status` says why.
        let out = l.output(&["replay"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "replay accepted {conn:?}");
        assert!(
            err.contains(names) && err.contains("secrets.json"),
            "{conn:?}: {err}"
        );
        let status = String::from_utf8(l.ok(&["status"]).stdout).unwrap();
        assert!(status.contains(names), "{conn:?}: {status}");
        for text in [&*err, &status] {
            assert!(!text.contains(KEY), "the key leaked: {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_at_any_level() {
    let Some(db) = TestDb::create() else { return };
    let srv = server().await;
    let l = Logger::new(json!({}));
    write_secrets(&l, &srv.connection_string(), Some((&db, db.server.port)));
    srv.inject(Fault::Unauthorized, 1);
    srv.inject(Fault::Unavailable, 1);
    let log = std::fs::File::create(l.log_path()).unwrap();
    let mut child = l
        .cmd(&["run"])
        .env("RUST_LOG", "trace")
        .stderr(log)
        .spawn_guarded();
    srv.wait_for_ids(3, Duration::from_secs(60)).await;
    assert!(terminate(&mut child, hxlog_test_support::SIGTERM_DEADLINE).success());
    let text = std::fs::read_to_string(l.log_path()).unwrap();
    assert!(
        text.lines().count() > 20,
        "trace logging produced too little to prove anything"
    );
    for token in srv.tokens_seen() {
        assert!(!text.contains(&token), "a token appeared in the log");
    }
    for secret in [KEY, "pg-pass-4d2b-secret", "Bearer ey"] {
        assert!(!text.contains(secret), "{secret:?} appeared in the log");
    }
}

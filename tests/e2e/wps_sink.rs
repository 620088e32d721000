//! The Web PubSub sink (`hxlog::sinks::webpubsub`) against the fake service
//! in `wps_server`: steady state, every class of answer, refused connections,
//! timeouts, catch-up batches and failures mid-batch.

use std::time::Duration;

use hxlog::sample::{Quality, Reading, Sample, Source};
use hxlog::sinks::webpubsub::{
    ClockState, ConnectionString, MAX_BATCH, MAX_MESSAGE_BYTES, WebPubSubSettings, WebPubSubSink,
    encode_messages,
};
use hxlog::sinks::{Sink, SinkError};
use jiff::Timestamp;

use crate::wps_server::{self, Fault, TestServer};

const KEY: &str = "s3cr3t+Key/With=Equals==";
const HUB: &str = "heatexchanger";

fn sample(i: i64) -> Sample {
    let t1 = Reading::ok(
        "T1",
        Some("28-000000000001".into()),
        61.25 + i as f64 * 0.01,
    );
    let t2 = Reading::missing("T2", None, Quality::CrcNo, "kernel reported crc=.. NO");
    let rest = [("T3", 18.5), ("T4", 40.0)].map(|(role, c)| Reading::ok(role, None, c));
    let taken_at = Timestamp::from_second(1_800_000_000 + i).unwrap();
    Sample::new(
        "hx-01",
        taken_at,
        Source::W1,
        [vec![t1, t2], rest.to_vec()].concat(),
    )
}

fn samples(n: i64) -> Vec<Sample> {
    (0..n).map(sample).collect()
}

fn settings(group: Option<&str>) -> WebPubSubSettings {
    WebPubSubSettings {
        hub: HUB.into(),
        group: group.map(str::to_string),
        timeout: Duration::from_secs(10),
    }
}

fn sink_for(server: &TestServer, settings: WebPubSubSettings) -> WebPubSubSink {
    let conn = ConnectionString::parse(&server.connection_string()).unwrap();
    WebPubSubSink::new(conn, settings).unwrap()
}

/// Fails if the key, or any token the server saw, appears in `text`.
fn assert_no_secret(text: &str, server: &TestServer) {
    assert!(!text.contains(KEY), "the key leaked: {text}");
    for token in server.tokens_seen() {
        assert!(!text.contains(&token), "a token leaked: {text}");
        // not even its signature
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            !text.contains(signature),
            "a token signature leaked: {text}"
        );
    }
}

fn ids(batch: &[Sample]) -> Vec<String> {
    batch.iter().map(|s| s.id.to_string()).collect()
}

#[test]
fn every_encoded_message_passes_the_services_schema_check() {
    let batch = samples(2000);
    let mock = Sample {
        source: Source::Mock,
        ..sample(0)
    };
    let one = encode_messages(&batch[..1], usize::MAX)[0].len();
    for max_bytes in [1, one, 2 * one, 64 * 1024, MAX_MESSAGE_BYTES, usize::MAX] {
        for (i, m) in encode_messages(&batch, max_bytes)
            .iter()
            .chain(&encode_messages(std::slice::from_ref(&mock), max_bytes))
            .enumerate()
        {
            let v: serde_json::Value = serde_json::from_slice(m).unwrap();
            wps_server::check_message(&v).unwrap_or_else(|e| panic!("max {max_bytes}, #{i}: {e}"));
        }
    }
}

#[tokio::test]
async fn steady_state_publish_is_accepted() {
    for group in [None, Some("site_1")] {
        let server = wps_server::start(HUB, KEY).await;
        let mut sink = sink_for(&server, settings(group));
        assert_eq!(sink.name(), "webpubsub");
        assert_eq!(sink.max_batch(), MAX_BATCH);
        let batch = samples(3);
        for s in &batch {
            sink.send(std::slice::from_ref(s)).await.unwrap();
        }
        assert_eq!(server.accepted_ids(), ids(&batch));
        let accepted = server.accepted();
        assert_eq!(accepted.len(), 3, "one message per sample");
        assert!(accepted.iter().all(|a| a.group.as_deref() == group));
        assert!(server.refusals().is_empty(), "{:?}", server.refusals());
        // an empty batch sends nothing
        sink.send(&[]).await.unwrap();
        assert_eq!(server.request_count(), 3);
    }
}

#[tokio::test]
async fn the_fake_refuses_bad_tokens() {
    let server = wps_server::start(HUB, KEY).await;
    let conn =
        ConnectionString::parse(&server.connection_string().replace(KEY, "not-the-key")).unwrap();
    let mut sink = WebPubSubSink::new(conn, settings(None)).unwrap();
    let e = sink.send(&samples(1)).await.unwrap_err();
    assert_eq!(e.class(), "permanent", "{e}");
    assert!(e.to_string().contains("Unauthorized"), "{e}");
    assert!(server.accepted_ids().is_empty());
    // a hub the fake does not serve is a 400
    let conn = ConnectionString::parse(&server.connection_string()).unwrap();
    let other = WebPubSubSettings {
        hub: "other".into(),
        ..settings(None)
    };
    let e = WebPubSubSink::new(conn, other)
        .unwrap()
        .send(&samples(1))
        .await
        .unwrap_err();
    assert_eq!(e.class(), "rejected", "{e}");
    assert_no_secret(&e.to_string(), &server);
}

#[tokio::test]
async fn service_answers_map_to_error_classes() {
    let server = wps_server::start(HUB, KEY).await;
    let mut sink = sink_for(&server, settings(None)).with_clock_state(|| ClockState::Unknown);
    for (fault, class, retry, needle) in [
        (Fault::Unavailable, "transient", None, "ServiceUnavailable"),
        (
            Fault::TooManyRequests {
                retry_after_secs: 7,
            },
            "transient",
            Some(Duration::from_secs(7)),
            "TooManyRequests",
        ),
        (
            Fault::Unauthorized,
            "permanent",
            None,
            "the access key was refused; check AZURE_WEBPUBSUB_CONNECTION_STRING in secrets.json",
        ),
        (Fault::BadRequest, "rejected", None, "InvalidMessage"),
        (Fault::PayloadTooLarge, "rejected", None, "PayloadTooLarge"),
    ] {
        server.inject(fault.clone(), 1);
        let e = sink.send(&samples(1)).await.unwrap_err();
        assert_eq!(e.class(), class, "{fault:?}: {e}");
        let text = e.to_string();
        assert!(text.contains(needle), "{fault:?}: {text}");
        assert!(!text.contains("NTP"), "{fault:?}: {text}");
        assert!(
            text.starts_with(char::is_lowercase) && !text.ends_with('.'),
            "{text}"
        );
        assert_no_secret(&format!("{e} {e:?}"), &server);
        if let SinkError::Transient { retry_after, .. } = &e {
            assert_eq!(*retry_after, retry, "{fault:?}");
        }
        // the next request goes through again
        let batch = samples(1);
        sink.send(&batch).await.unwrap();
        assert_eq!(server.accepted_ids().last(), Some(&batch[0].id.to_string()));
    }
}

#[tokio::test]
async fn a_refused_token_on_an_unsynchronised_clock_says_so() {
    let server = wps_server::start(HUB, KEY).await;
    let cases: [(fn() -> ClockState, bool); 3] = [
        (|| ClockState::Unsynchronised, true),
        (|| ClockState::Synchronised, false),
        (|| ClockState::Unknown, false),
    ];
    for (check, mentions_ntp) in cases {
        let state = check();
        let mut sink = sink_for(&server, settings(None)).with_clock_state(check);
        server.inject(Fault::Unauthorized, 1);
        let e = sink.send(&samples(1)).await.unwrap_err();
        assert_eq!(e.class(), "permanent");
        assert_eq!(
            e.to_string().contains("no NTP yet"),
            mentions_ntp,
            "{state:?}: {e}"
        );
        assert_no_secret(&e.to_string(), &server);
    }
}

#[tokio::test]
async fn connection_refused_is_transient_and_recovers() {
    let server = wps_server::start(HUB, KEY).await;
    let mut sink = sink_for(&server, settings(None));
    let first = samples(1);
    sink.send(&first).await.unwrap();
    server.stop().await;
    let e = sink.send(&samples(1)).await.unwrap_err();
    assert_eq!(e.class(), "transient", "{e}");
    assert!(matches!(
        e,
        SinkError::Transient {
            retry_after: None,
            ..
        }
    ));
    assert_no_secret(&format!("{e} {e:?}"), &server);
    server.restart().await;
    let again = samples(1);
    sink.send(&again).await.unwrap();
    assert_eq!(server.accepted_ids(), [ids(&first), ids(&again)].concat());
}

#[tokio::test]
async fn a_slow_answer_past_the_timeout_is_transient() {
    let server = wps_server::start(HUB, KEY).await;
    let timeout = Duration::from_millis(300);
    let mut sink = sink_for(
        &server,
        WebPubSubSettings {
            timeout,
            ..settings(None)
        },
    );
    server.inject(Fault::Delay(Duration::from_secs(5)), 1);
    let e = sink.send(&samples(1)).await.unwrap_err();
    assert_eq!(e.class(), "transient", "{e}");
    assert!(e.to_string().contains("no answer within 0.3 s"), "{e}");
    assert_no_secret(&format!("{e} {e:?}"), &server);
}

#[tokio::test]
async fn a_catch_up_batch_arrives_in_order_in_several_messages() {
    let server = wps_server::start(HUB, KEY).await;
    let mut sink = sink_for(&server, settings(None)).with_max_message_bytes(16 * 1024);
    let batch = samples(MAX_BATCH as i64);
    sink.send(&batch).await.unwrap();
    let messages = server.accepted_messages();
    assert!(messages.len() > 1, "{} messages", messages.len());
    for m in &messages {
        assert!(serde_json::to_vec(m).unwrap().len() <= 16 * 1024);
    }
    assert_eq!(server.accepted_ids(), ids(&batch));
}

#[tokio::test]
async fn a_failure_mid_batch_returns_the_error_and_a_resend_delivers_all() {
    let server = wps_server::start(HUB, KEY).await;
    let mut sink = sink_for(&server, settings(None)).with_max_message_bytes(4 * 1024);
    let batch = samples(40);
    let messages = encode_messages(&batch, 4 * 1024);
    assert!(messages.len() >= 3);
    let first_len = serde_json::from_slice::<serde_json::Value>(&messages[0]).unwrap()["samples"]
        .as_array()
        .unwrap()
        .len();
    // message 1 passes, message 2 meets a 503
    server.inject(Fault::Delay(Duration::ZERO), 1);
    server.inject(Fault::Unavailable, 1);
    let e = sink.send(&batch).await.unwrap_err();
    assert_eq!(e.class(), "transient");
    assert_eq!(server.request_count(), 2, "no message after the failed one");
    assert_eq!(server.accepted_ids(), ids(&batch[..first_len]));
    // at least once: the resend repeats message 1, subscribers dedupe on id
    sink.send(&batch).await.unwrap();
    assert_eq!(
        server.accepted_ids(),
        [ids(&batch[..first_len]), ids(&batch)].concat()
    );
}

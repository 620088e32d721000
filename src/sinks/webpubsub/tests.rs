//! Unit tests of the Web PubSub sink's pure parts; the tests against the fake
//! service live in `tests/e2e/wps_sink.rs`.

use jiff::Timestamp;

use super::classify::{classify_status, error_detail, parse_http_date, retry_after};
use super::clock::{CLOCK_HINT, clock_hint};
use super::token::{base64url, mint_token};
use super::*;
use crate::sample::{Quality, Reading, Source};

const KEY: &str = "s3cr3t+Key/With=Equals==";

fn sample(i: i64, source: Source) -> Sample {
    let readings = vec![
        Reading::ok(
            "T1",
            Some("28-000000000001".into()),
            61.25 + i as f64 * 0.01,
        ),
        Reading::missing("T2", None, Quality::CrcNo, "kernel reported crc=.. NO"),
        Reading::ok("T3", None, 18.5),
        Reading::ok("T4", None, 40.0),
    ];
    Sample::new(
        "hx-01",
        Timestamp::from_second(1_800_000_000 + i).unwrap(),
        source,
        readings,
    )
}

fn samples(n: i64) -> Vec<Sample> {
    (0..n).map(|i| sample(i, Source::W1)).collect()
}

/// Fails if the key appears in `text`.
fn assert_no_key(text: &str) {
    assert!(!text.contains(KEY), "the key leaked: {text}");
}

fn ids(batch: &[Sample]) -> Vec<String> {
    batch.iter().map(|s| s.id.to_string()).collect()
}

// --- connection string -------------------------------------------------

fn check_conn(input: &str, expected: Result<(&str, Option<u16>, &str), ConnectionStringError>) {
    let got = ConnectionString::parse(input);
    match (&got, &expected) {
        (Ok(c), Ok((endpoint, port, key))) => {
            assert_eq!(c.endpoint(), *endpoint, "{input}");
            assert_eq!(c.port(), *port, "{input}");
            assert_eq!(c.access_key().expose(), *key, "{input}");
            assert_no_key(&format!("{c:?} {c}"));
        }
        (Err(e), Err(x)) => {
            assert_eq!(e, x, "{input}");
            assert_no_key(&format!("{e} {e:?}"));
            assert!(!format!("{e} {e:?}").contains("hunter2"), "{e}");
        }
        _ => panic!("{input}: got {got:?}, expected {expected:?}"),
    }
}

#[test]
fn connection_strings() {
    use ConnectionStringError as E;
    let azure = "https://hx.webpubsub.azure.com";
    for (input, expected) in [
        (
            format!("Endpoint={azure};AccessKey={KEY};Version=1.0;"),
            Ok((azure, None, KEY)),
        ),
        // order, case, no trailing ;, spaces
        (
            format!("accesskey={KEY};VERSION=1.0;ENDPOINT={azure}"),
            Ok((azure, None, KEY)),
        ),
        (
            format!(" Version=1.0 ; AccessKey = {KEY} ; Endpoint = {azure}/ ;"),
            Ok((azure, None, KEY)),
        ),
        (
            format!("Endpoint=HTTPS://HX.WebPubSub.Azure.com;AccessKey={KEY}"),
            Ok((azure, None, KEY)),
        ),
        // the local emulator and the tests
        (
            format!("Endpoint=http://127.0.0.1;Port=8080;AccessKey={KEY};Version=1.0;"),
            Ok(("http://127.0.0.1", Some(8080), KEY)),
        ),
        (
            format!("Endpoint=http://localhost:7071;AccessKey={KEY}"),
            Ok(("http://localhost:7071", None, KEY)),
        ),
        // a key that is only `=` signs beyond the first
        (
            format!("Endpoint={azure};AccessKey=a==b="),
            Ok((azure, None, "a==b=")),
        ),
        ("".into(), Err(E::Empty)),
        ("  ;; ".into(), Err(E::Missing("Endpoint"))),
        (format!("AccessKey={KEY}"), Err(E::Missing("Endpoint"))),
        (
            format!("Endpoint=;AccessKey={KEY}"),
            Err(E::Missing("Endpoint")),
        ),
        (
            format!("Endpoint={azure};Version=1.0"),
            Err(E::Missing("AccessKey")),
        ),
        (
            format!("Endpoint={azure};AccessKey="),
            Err(E::Missing("AccessKey")),
        ),
        // a part without `=` is not echoed: it may be the key itself
        (
            format!("Endpoint={azure};AccessKey:hunter2"),
            Err(E::Malformed(2)),
        ),
        // a key pasted without its name is an unknown key: ignored, never echoed
        (
            format!("Endpoint={azure};{KEY}"),
            Err(E::Missing("AccessKey")),
        ),
        (
            format!("Endpoint={azure};AccessKey={KEY};accesskey={KEY}"),
            Err(E::Duplicate("accesskey".into())),
        ),
        (
            format!("Endpoint=ftp://hx;AccessKey={KEY}"),
            Err(E::BadEndpoint {
                endpoint: "ftp://hx".into(),
                reason: "the scheme must be http or https".into(),
            }),
        ),
        (
            format!("Endpoint=hx.webpubsub.azure.com;AccessKey={KEY}"),
            Err(E::BadEndpoint {
                endpoint: "hx.webpubsub.azure.com".into(),
                reason: "relative URL without a base".into(),
            }),
        ),
        (
            format!("Endpoint={azure}/api;AccessKey={KEY}"),
            Err(E::BadEndpoint {
                endpoint: format!("{azure}/api"),
                reason: "it must not have a path, query or fragment".into(),
            }),
        ),
        (
            format!("Endpoint=http://127.0.0.1:1;Port=2;AccessKey={KEY}"),
            Err(E::BadEndpoint {
                endpoint: "http://127.0.0.1:1".into(),
                reason: "it has a port and Port= is also given".into(),
            }),
        ),
        // http:// only to this machine: elsewhere the token would travel in clear text
        (
            format!("Endpoint=http://127.0.0.2;AccessKey={KEY}"),
            Ok(("http://127.0.0.2", None, KEY)),
        ),
        (
            format!("Endpoint=http://[::1]:8080;AccessKey={KEY}"),
            Ok(("http://[::1]:8080", None, KEY)),
        ),
        (
            format!("Endpoint=http://LOCALHOST;AccessKey={KEY}"),
            Ok(("http://localhost", None, KEY)),
        ),
        (
            format!("Endpoint=http://hx.webpubsub.azure.com;AccessKey={KEY}"),
            Err(E::BadEndpoint {
                endpoint: "http://hx.webpubsub.azure.com".into(),
                reason: super::connection_string::CLEAR_TEXT.into(),
            }),
        ),
        (
            format!("Endpoint=http://10.0.0.5;Port=8080;AccessKey={KEY}"),
            Err(E::BadEndpoint {
                endpoint: "http://10.0.0.5".into(),
                reason: super::connection_string::CLEAR_TEXT.into(),
            }),
        ),
        (
            format!("Endpoint=http://localhost.example.com;AccessKey={KEY}"),
            Err(E::BadEndpoint {
                endpoint: "http://localhost.example.com".into(),
                reason: super::connection_string::CLEAR_TEXT.into(),
            }),
        ),
        (
            format!("Endpoint={azure};Port=0;AccessKey={KEY}"),
            Err(E::BadPort("0".into())),
        ),
        (
            format!("Endpoint={azure};Port=65536;AccessKey={KEY}"),
            Err(E::BadPort("65536".into())),
        ),
        (
            format!("Endpoint={azure};Port=http;AccessKey={KEY}"),
            Err(E::BadPort("http".into())),
        ),
    ] {
        check_conn(&input, expected);
    }
}

#[test]
fn error_texts_name_the_bad_part() {
    for (input, needle) in [
        ("", "empty"),
        ("AccessKey=x", "no Endpoint"),
        ("Endpoint=https://h", "no AccessKey"),
        ("Endpoint=https://h;AccessKey=x;Port=abc", "Port \"abc\""),
        ("Endpoint=ftp://h;AccessKey=x", "http or https"),
        ("Endpoint=https://h;x", "part 2"),
    ] {
        let e = ConnectionString::parse(input).unwrap_err().to_string();
        assert!(e.contains(needle), "{input}: {e}");
        assert!(
            e.starts_with(char::is_lowercase) && !e.ends_with('.'),
            "{e}"
        );
    }
}

// --- URL and names -----------------------------------------------------

#[test]
fn send_urls() {
    let q = "?api-version=2024-12-01";
    for (conn, hub, group, expected) in [
        (
            "Endpoint=https://hx.webpubsub.azure.com;AccessKey=k",
            "heatexchanger",
            None,
            format!("https://hx.webpubsub.azure.com/api/hubs/heatexchanger/:send{q}"),
        ),
        (
            "Endpoint=https://hx.webpubsub.azure.com/;AccessKey=k",
            "hx_2",
            Some("site_A1"),
            format!("https://hx.webpubsub.azure.com/api/hubs/hx_2/groups/site_A1/:send{q}"),
        ),
        (
            "Endpoint=http://127.0.0.1;Port=8080;AccessKey=k",
            "Hub",
            None,
            format!("http://127.0.0.1:8080/api/hubs/Hub/:send{q}"),
        ),
        // names are percent-encoded path segments
        (
            "Endpoint=https://hx.webpubsub.azure.com;AccessKey=k",
            "hx.1`[a]",
            Some("hx-01"),
            format!("https://hx.webpubsub.azure.com/api/hubs/hx.1%60[a]/groups/hx-01/:send{q}"),
        ),
        (
            "Endpoint=https://hx.webpubsub.azure.com;AccessKey=k",
            "h",
            Some("site 1/a?b#c%d"),
            format!(
                "https://hx.webpubsub.azure.com/api/hubs/h/groups/site%201%2Fa%3Fb%23c%25d/:send{q}"
            ),
        ),
        // the default port is not written, exactly as the request line and Host header carry it
        (
            "Endpoint=https://hx.webpubsub.azure.com;Port=443;AccessKey=k",
            "h",
            None,
            format!("https://hx.webpubsub.azure.com/api/hubs/h/:send{q}"),
        ),
    ] {
        let settings = WebPubSubSettings {
            hub: hub.into(),
            group: group.map(str::to_string),
            ..WebPubSubSettings::default()
        };
        let sink = WebPubSubSink::new(conn.parse().unwrap(), settings).unwrap();
        assert_eq!(sink.url(), expected);
    }
}

#[test]
fn hub_and_group_names() {
    // The service's rules (REST reference): hub `^[A-Za-z][A-Za-z0-9_`,.[\]]{0,127}$`,
    // group 1..=1024 characters matching `^(?!\s+$).+$`.
    let long = "g".repeat(MAX_GROUP_LEN);
    let long_wide = "ü".repeat(MAX_GROUP_LEN);
    let too_long = "g".repeat(MAX_GROUP_LEN + 1);
    let long_hub = format!("h{}", "x".repeat(MAX_HUB_LEN - 1));
    let too_long_hub = format!("h{}", "x".repeat(MAX_HUB_LEN));
    for (hub, group, ok) in [
        ("heatexchanger", None, true),
        ("Hx_01", Some("site_1"), true),
        ("h", Some("_1"), true),
        ("h", Some(long.as_str()), true),
        ("h", Some(long_wide.as_str()), true),
        ("h", Some(too_long.as_str()), false),
        ("h", Some(""), false),
        ("h", Some("hx-01"), true),
        ("h", Some("a/b"), true),
        ("h", Some("Halle 3, Linie ü"), true),
        ("h", Some(" x "), true),
        ("h", Some("   "), false),
        ("h", Some("a\nb"), false),
        ("h", Some("."), false),
        ("h", Some(".."), false),
        ("h", Some("..."), true),
        ("a.b,c`[d]_1", None, true),
        (long_hub.as_str(), None, true),
        (too_long_hub.as_str(), None, false),
        ("1hub", None, false),
        ("_hub", None, false),
        ("", None, false),
        ("heat-exchanger", None, false),
        ("heat exchanger", None, false),
        ("hub/x", None, false),
        ("hüb", None, false),
    ] {
        let settings = WebPubSubSettings {
            hub: hub.into(),
            group: group.map(str::to_string),
            ..WebPubSubSettings::default()
        };
        let conn: ConnectionString = format!("Endpoint=https://h;AccessKey={KEY}")
            .parse()
            .unwrap();
        let got = WebPubSubSink::new(conn, settings);
        assert_eq!(got.is_ok(), ok, "{hub:?} {group:?}: {got:?}");
        if let Err(e) = got {
            assert_no_key(&format!("{e:#}"));
        }
    }
}

#[test]
fn debug_never_shows_the_key() {
    let conn: ConnectionString = format!("Endpoint=https://h;AccessKey={KEY}")
        .parse()
        .unwrap();
    let sink = WebPubSubSink::new(conn.clone(), WebPubSubSettings::default()).unwrap();
    for text in [
        format!("{conn:?}"),
        format!("{conn:#?}"),
        format!("{conn}"),
        format!("{sink:?}"),
        format!("{:?}", conn.access_key()),
    ] {
        assert_no_key(&text);
        assert!(text.contains("<redacted>"), "{text}");
    }
}

// --- token ---------------------------------------------------------------

fn b64url_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => panic!("not base64url: {c}"),
    };
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes() {
        bits = (bits << 6) | u32::from(value(c));
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

#[test]
fn base64url_matches_rfc_4648_vectors() {
    for (input, expected) in [
        (&b""[..], ""),
        (b"f", "Zg"),
        (b"fo", "Zm8"),
        (b"foo", "Zm9v"),
        (b"foob", "Zm9vYg"),
        (b"fooba", "Zm9vYmE"),
        (b"foobar", "Zm9vYmFy"),
        (&[0xfb, 0xff], "-_8"),
    ] {
        assert_eq!(base64url(input), expected);
        assert_eq!(b64url_decode(expected), input);
    }
}

#[test]
fn token_header_and_claims_are_exactly_the_sdks() {
    let url = "http://127.0.0.1:8080/api/hubs/heatexchanger/:send?api-version=2024-12-01";
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let token = mint_token(&Secret::new(KEY), url, now).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(
        String::from_utf8(b64url_decode(parts[0])).unwrap(),
        r#"{"alg":"HS256","typ":"JWT"}"#
    );
    assert_eq!(
        String::from_utf8(b64url_decode(parts[1])).unwrap(),
        format!(r#"{{"aud":"{url}","exp":1800000060}}"#)
    );
    // signed with the key's UTF-8 bytes (not base64-decoded)
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_exp = false;
    validation.set_audience(&[url]);
    let data = jsonwebtoken::decode::<serde_json::Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(KEY.as_bytes()),
        &validation,
    )
    .unwrap();
    assert_eq!(
        data.claims,
        serde_json::json!({"aud": url, "exp": 1_800_000_060})
    );
    assert_eq!(data.header.kid, None);
    let wrong = jsonwebtoken::decode::<serde_json::Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(b"another key"),
        &validation,
    );
    assert!(wrong.is_err());
}

// --- messages ------------------------------------------------------------

/// The sample of the module documentation's example: keep the two in step.
#[test]
fn message_schema() {
    let mut s = sample(0, Source::Mock);
    s.id = uuid::Uuid::parse_str("019ac9e2-3c00-7d4e-9f3a-2b1c0d9e8f70").unwrap();
    s.taken_at = "2026-11-28T10:00:00Z".parse().unwrap();
    let messages = encode_messages(std::slice::from_ref(&s), MAX_MESSAGE_BYTES);
    assert_eq!(messages.len(), 1);
    let got: serde_json::Value = serde_json::from_slice(&messages[0]).unwrap();
    let expected = serde_json::json!({
        "type": "hxlog.samples",
        "version": 1,
        "samples": [{
            "id": "019ac9e2-3c00-7d4e-9f3a-2b1c0d9e8f70",
            "device_id": "hx-01",
            "taken_at": "2026-11-28T10:00:00Z",
            "clock": "synced",
            "taken_at_raw": null,
            "source": "mock",
            "mock": true,
            "readings": {
                "T1": {"celsius": 61.25, "quality": "ok"},
                "T2": {"celsius": null, "quality": "crc_no", "reason": "kernel reported crc=.. NO"},
                "T3": {"celsius": 18.5, "quality": "ok"},
                "T4": {"celsius": 40.0, "quality": "ok"}
            },
            "efficiency": {
                "hot_effectiveness": null,
                "cold_effectiveness": 0.5029239766081871,
                "effectiveness": null,
                "lmtd": null
            }
        }]
    });
    assert_eq!(got, expected);
    // key order on the wire: roles in mapping order, fields as documented
    let text = String::from_utf8(messages[0].clone()).unwrap();
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle} in {text}"))
    };
    assert!(
        at("\"T1\"") < at("\"T2\"") && at("\"T2\"") < at("\"T3\"") && at("\"T3\"") < at("\"T4\"")
    );
    assert!(at("\"type\"") < at("\"version\"") && at("\"version\"") < at("\"samples\""));
    // real sensors are not marked mock
    let w1: serde_json::Value =
        serde_json::from_slice(&encode_messages(&[sample(1, Source::W1)], MAX_MESSAGE_BYTES)[0])
            .unwrap();
    assert_eq!(w1["samples"][0]["source"], "w1");
    assert_eq!(w1["samples"][0]["mock"], false);
    assert!(encode_messages(&[], MAX_MESSAGE_BYTES).is_empty());
}

#[test]
fn batches_split_into_messages_under_the_limit_in_order() {
    let batch = samples(2000);
    let one = encode_messages(&batch[..1], usize::MAX)[0].len();
    for max_bytes in [
        1,
        one,
        one + 1,
        2 * one,
        4096,
        64 * 1024,
        MAX_MESSAGE_BYTES,
        usize::MAX,
    ] {
        let messages = encode_messages(&batch, max_bytes);
        let mut got = Vec::new();
        for m in &messages {
            let v: serde_json::Value = serde_json::from_slice(m).unwrap();
            let n = v["samples"].as_array().unwrap().len();
            assert!(
                m.len() <= max_bytes || n == 1,
                "max {max_bytes}: a message of {n} samples has {} bytes",
                m.len()
            );
            got.extend(
                v["samples"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["id"].as_str().unwrap().to_string()),
            );
        }
        assert_eq!(got, ids(&batch), "max {max_bytes}: every id once, in order");
        // packing is tight: no two neighbours would have fitted together
        for pair in messages.windows(2) {
            assert!(
                pair[0].len() + one > max_bytes,
                "max {max_bytes}: under-packed"
            );
        }
    }
    let at_limit = encode_messages(&batch, MAX_MESSAGE_BYTES);
    assert!(
        at_limit.len() > 1,
        "2,000 samples need more than one 256 KiB message"
    );
}

// --- error classification ----------------------------------------------

#[test]
fn retry_after_forms() {
    let now = Timestamp::from_second(784_111_777).unwrap(); // Sun, 06 Nov 1994 08:49:37 GMT
    for (headers, expected) in [
        (vec![("retry-after", "7")], Some(Duration::from_secs(7))),
        (vec![("retry-after", " 0 ")], Some(Duration::ZERO)),
        (
            vec![("retry-after", "Sun, 06 Nov 1994 08:50:07 GMT")],
            Some(Duration::from_secs(30)),
        ),
        (
            vec![("retry-after", "Sun, 06 Nov 1994 08:49:00 GMT")],
            Some(Duration::ZERO),
        ),
        (vec![("retry-after", "soon")], None),
        (
            vec![("retry-after-ms", "1500"), ("retry-after", "9")],
            Some(Duration::from_millis(1500)),
        ),
        (vec![], None),
    ] {
        let mut map = reqwest::header::HeaderMap::new();
        for (k, v) in &headers {
            map.insert(*k, v.parse().unwrap());
        }
        assert_eq!(retry_after(&map, now), expected, "{headers:?}");
    }
}

#[test]
fn statuses_map_to_classes() {
    let body = r#"{"error":{"code":"SomeCode","message":"some message","target":null}}"#;
    for (status, class) in [
        (429, "transient"),
        (500, "transient"),
        (502, "transient"),
        (503, "transient"),
        (504, "transient"),
        (400, "rejected"),
        (413, "rejected"),
        (401, "permanent"),
        (403, "permanent"),
        (404, "permanent"),
        (405, "permanent"),
        (301, "permanent"),
    ] {
        let status = reqwest::StatusCode::from_u16(status).unwrap();
        let e = classify_status(status, &Default::default(), body, None, Timestamp::now());
        assert_eq!(e.class(), class, "{status}");
        let text = e.to_string();
        assert!(text.contains("SomeCode: some message"), "{text}");
        assert!(text.contains(&status.as_u16().to_string()), "{text}");
    }
}

#[test]
fn error_details() {
    let s = reqwest::StatusCode::BAD_REQUEST;
    for (body, expected) in [
        (
            r#"{"error":{"code":"C","message":"M"}}"#,
            "400 Bad Request: C: M",
        ),
        (r#"{"error":{"message":"M"}}"#, "400 Bad Request: M"),
        ("", "400 Bad Request"),
        ("plain text", "400 Bad Request: plain text"),
    ] {
        assert_eq!(error_detail(s, body), expected);
    }
    assert_eq!(
        error_detail(s, &"x".repeat(1000)).len(),
        "400 Bad Request: ".len() + 200
    );
}

#[test]
fn clock_hints() {
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let at = |offset: i64| Some(Timestamp::from_second(1_800_000_000 + offset).unwrap());
    for (state, server, expected) in [
        (ClockState::Unknown, None, None),
        (ClockState::Synchronised, None, None),
        (
            ClockState::Unsynchronised,
            None,
            Some(CLOCK_HINT.to_string()),
        ),
        (ClockState::Unknown, at(5), None),
        (ClockState::Unknown, at(-30), None),
        (
            ClockState::Unknown,
            at(3600),
            Some(format!(
                "the system clock is 3600 s behind the service's; {CLOCK_HINT}"
            )),
        ),
        (
            ClockState::Synchronised,
            at(-120),
            Some(format!(
                "the system clock is 120 s ahead of the service's; {CLOCK_HINT}"
            )),
        ),
        (
            ClockState::Unsynchronised,
            at(0),
            Some(CLOCK_HINT.to_string()),
        ),
    ] {
        assert_eq!(
            clock_hint(state, server, now),
            expected,
            "{state:?} {server:?}"
        );
    }
    assert_eq!(
        parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
        Some(Timestamp::from_second(784_111_777).unwrap())
    );
}

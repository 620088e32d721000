use super::*;
use crate::config::Synchronous;
use crate::outbox::Outbox;
use crate::sample::{Reading, Source};
use std::collections::VecDeque;
use std::sync::Mutex;

/// The ids a test sink was sent, in order, resends included.
type Received = Arc<Mutex<Vec<uuid::Uuid>>>;

fn record(received: &Received, batch: &[Sample]) {
    received.lock().unwrap().extend(batch.iter().map(|s| s.id));
}

/// A scripted in-memory sink: answers from `script` first, then Ok.
struct ScriptedSink {
    script: VecDeque<SinkError>,
    received: Received,
    max_batch: usize,
}

impl Sink for ScriptedSink {
    fn name(&self) -> &'static str {
        "scripted"
    }
    fn max_batch(&self) -> usize {
        self.max_batch
    }
    async fn send(&mut self, batch: &[Sample]) -> Result<(), SinkError> {
        if let Some(e) = self.script.pop_front() {
            return Err(e);
        }
        record(&self.received, batch);
        Ok(())
    }
}

fn setup(n: usize) -> (tempfile::TempDir, SharedOutbox, Vec<uuid::Uuid>) {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = Outbox::open(&dir.path().join("o.sqlite"), Synchronous::Normal).unwrap();
    let samples: Vec<Sample> = (0..n)
        .map(|i| {
            Sample::new(
                "hx",
                Timestamp::from_second(1_800_000_000 + i as i64).unwrap(),
                Source::Mock,
                vec![Reading::ok("T1", None, 50.0)],
            )
        })
        .collect();
    ob.insert_all(&samples).unwrap();
    (
        dir,
        SharedOutbox::new(ob),
        samples.iter().map(|s| s.id).collect(),
    )
}

fn sink(script: Vec<SinkError>, max_batch: usize) -> (ScriptedSink, Received) {
    let received = Arc::new(Mutex::new(vec![]));
    (
        ScriptedSink {
            script: script.into(),
            received: received.clone(),
            max_batch,
        },
        received,
    )
}

fn drain_opts() -> ForwardOptions {
    let mut o = ForwardOptions::new(
        Mode::Drain {
            give_up_after: Duration::from_secs(30),
        },
        Duration::from_millis(20),
        CancellationToken::new(),
    );
    o.policy.min = Duration::from_millis(1);
    o
}

#[tokio::test]
async fn drains_everything_in_order_in_batches() {
    let (_d, ob, ids) = setup(25);
    let (s, received) = sink(vec![], 10);
    let r = forward(s, ob.clone(), drain_opts()).await.unwrap();
    assert_eq!(r.delivered, 25);
    assert_eq!(*received.lock().unwrap(), ids);
    assert_eq!(ob.call(|o| o.pending_count("scripted")).await.unwrap(), 0);
}

#[tokio::test]
async fn transient_errors_are_retried_without_loss() {
    let (_d, ob, ids) = setup(5);
    let errs = vec![
        SinkError::transient("connection refused"),
        SinkError::Transient {
            message: "429".into(),
            retry_after: Some(Duration::from_millis(5)),
        },
        SinkError::transient("timeout"),
    ];
    let (s, received) = sink(errs, 2);
    let r = forward(s, ob.clone(), drain_opts()).await.unwrap();
    assert_eq!(r.delivered, 5);
    assert_eq!(*received.lock().unwrap(), ids);
    let st = ob.call(|o| o.sink_state("scripted")).await.unwrap();
    assert_eq!(st.last_error_class.as_deref(), Some("transient"));
    assert_eq!(st.pending, 0);
}

#[tokio::test]
async fn rejected_batches_are_recorded_and_skipped() {
    let (_d, ob, ids) = setup(4);
    let (s, received) = sink(
        vec![SinkError::Rejected {
            message: "400 bad".into(),
        }],
        2,
    );
    let r = forward(s, ob.clone(), drain_opts()).await.unwrap();
    assert_eq!((r.delivered, r.rejected), (2, 2));
    assert_eq!(*received.lock().unwrap(), ids[2..].to_vec());
    let st = ob.call(|o| o.sink_state("scripted")).await.unwrap();
    assert_eq!(st.rejected_count, 2);
}

#[tokio::test]
async fn drain_fails_on_a_permanent_error_and_keeps_the_data() {
    let (_d, ob, _) = setup(3);
    let (s, received) = sink(
        vec![SinkError::permanent("password authentication failed")],
        10,
    );
    let err = forward(s, ob.clone(), drain_opts()).await.unwrap_err();
    assert!(
        err.to_string().contains("password authentication failed"),
        "{err}"
    );
    assert!(received.lock().unwrap().is_empty());
    let st = ob.call(|o| o.sink_state("scripted")).await.unwrap();
    assert_eq!(st.pending, 3);
    assert_eq!(st.last_error_class.as_deref(), Some("permanent"));
}

#[tokio::test]
async fn follow_mode_stops_on_shutdown_with_nothing_lost() {
    let (_d, ob, _) = setup(3);
    let (s, _received) = sink(
        (0..1000).map(|_| SinkError::transient("down")).collect(),
        10,
    );
    let shutdown = CancellationToken::new();
    let mut opts = ForwardOptions::new(Mode::Follow, Duration::from_secs(60), shutdown.clone());
    opts.policy.min = Duration::from_secs(30);
    let task = tokio::spawn(forward(s, ob.clone(), opts));
    // wait until the first failure is recorded, then shut down
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = ob.call(|o| o.sink_state("scripted")).await.unwrap();
        if st.last_error.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "no failure recorded");
        tokio::task::yield_now().await;
    }
    shutdown.cancel();
    let r = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(r.interrupted);
    assert_eq!(ob.call(|o| o.pending_count("scripted")).await.unwrap(), 3);
}

#[test]
fn delays_are_jittered_and_capped() {
    let p = RetryPolicy {
        min: Duration::from_millis(100),
        max: Duration::from_secs(2),
    };
    let d: Vec<_> = p.delays().take(200).collect();
    assert!(d.iter().all(|d| *d <= Duration::from_secs(2)));
    // full jitter: not all equal, and late delays spread over the range
    let late = &d[50..];
    assert!(late.iter().any(|d| *d < Duration::from_secs(1)));
    assert!(late.iter().any(|d| *d > Duration::from_secs(1)));
}

/// Delivers fine, but makes the outbox unwritable around its first delivery.
struct AckFailsOnceSink {
    outbox: SharedOutbox,
    sends: usize,
    received: Received,
}

impl Sink for AckFailsOnceSink {
    fn name(&self) -> &'static str {
        "ackfails"
    }
    fn max_batch(&self) -> usize {
        100
    }
    async fn send(&mut self, batch: &[Sample]) -> Result<(), SinkError> {
        self.sends += 1;
        let read_only = self.sends == 1;
        self.outbox
            .call(move |o| o.set_read_only_for_tests(read_only))
            .await
            .unwrap();
        record(&self.received, batch);
        Ok(())
    }
}

#[tokio::test]
async fn a_failed_ack_resends_the_batch_and_keeps_forwarding() {
    let (_d, ob, ids) = setup(5);
    let received = Arc::new(Mutex::new(vec![]));
    let sink = AckFailsOnceSink {
        outbox: ob.clone(),
        sends: 0,
        received: received.clone(),
    };
    let shutdown = CancellationToken::new();
    let opts = ForwardOptions::new(Mode::Follow, Duration::from_secs(1), shutdown.clone());
    let task = tokio::spawn(forward(sink, ob.clone(), opts));
    let deadline = Instant::now() + Duration::from_secs(20);
    while ob.call(|o| o.pending_count("ackfails")).await.unwrap() > 0 {
        assert!(
            Instant::now() < deadline,
            "the forwarder stopped after a failed ack"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    let report = task.await.unwrap().unwrap();
    assert_eq!(report.delivered, 5);
    // delivered twice (at least once), acknowledged once
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 10);
    assert_eq!(got[5..], ids[..]);
}

/// Never answers its first `hangs` sends, then delivers.
struct HangingSink {
    hangs: usize,
    received: Received,
}

impl Sink for HangingSink {
    fn name(&self) -> &'static str {
        "hanging"
    }
    fn max_batch(&self) -> usize {
        100
    }
    async fn send(&mut self, batch: &[Sample]) -> Result<(), SinkError> {
        if self.hangs > 0 {
            self.hangs -= 1;
            std::future::pending::<()>().await;
        }
        record(&self.received, batch);
        Ok(())
    }
}

#[tokio::test]
async fn a_send_that_never_answers_times_out_as_transient() {
    let (_d, ob, ids) = setup(3);
    let received = Arc::new(Mutex::new(vec![]));
    let sink = HangingSink {
        hangs: 2,
        received: received.clone(),
    };
    let mut opts = drain_opts();
    opts.send_timeout = Duration::from_millis(100);
    let r = forward(sink, ob.clone(), opts).await.unwrap();
    assert_eq!(r.delivered, 3);
    assert_eq!(*received.lock().unwrap(), ids);
    let st = ob.call(|o| o.sink_state("hanging")).await.unwrap();
    assert_eq!(st.last_error_class.as_deref(), Some("transient"));
    assert!(
        st.last_error
            .as_deref()
            .unwrap()
            .contains("no answer within"),
        "{st:?}"
    );
}

#[tokio::test]
async fn drain_gives_up_on_time_even_while_a_send_hangs() {
    let (_d, ob, _) = setup(3);
    let sink = HangingSink {
        hangs: usize::MAX,
        received: Arc::default(),
    };
    let mut opts = drain_opts();
    opts.mode = Mode::Drain {
        give_up_after: Duration::from_millis(300),
    };
    // far longer than the give-up time: the give-up time must win
    opts.send_timeout = Duration::from_secs(3600);
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(30), forward(sink, ob.clone(), opts))
        .await
        .expect("the drain hung past its give-up time")
        .unwrap_err();
    assert!(err.to_string().contains("still failing"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(ob.call(|o| o.pending_count("hanging")).await.unwrap(), 3);
}

#[tokio::test]
async fn only_the_samples_a_sink_names_are_rejected_and_the_rest_acked() {
    let (_d, ob, ids) = setup(6);
    let refusal = |id: uuid::Uuid, reason: &str| crate::sinks::Refusal {
        id,
        reason: reason.into(),
    };
    let (s, received) = sink(
        vec![SinkError::RejectedSamples {
            refused: vec![
                refusal(ids[3], "check violation (SQLSTATE 23514)"),
                refusal(ids[1], "untranslatable (SQLSTATE 22P05)"),
                // not in the batch: a sink bug, ignored
                refusal(uuid::Uuid::now_v7(), "elsewhere"),
            ],
        }],
        4,
    );
    let r = forward(s, ob.clone(), drain_opts()).await.unwrap();
    // first batch: 4 samples, 2 refused, 2 accepted; second batch: 2 delivered
    assert_eq!((r.delivered, r.rejected), (4, 2));
    assert_eq!(*received.lock().unwrap(), ids[4..].to_vec());
    let st = ob.call(|o| o.sink_state("scripted")).await.unwrap();
    assert_eq!(st.pending, 0);
    assert_eq!(st.rejected_count, 2);
    assert_eq!(st.delivered_count, 4);
    assert_eq!(st.last_error_class.as_deref(), Some("rejected"));
}

#[test]
fn retry_after_only_lengthens_the_schedules_wait() {
    let ms = Duration::from_millis;
    let max = ms(1000);
    for (schedule, asked, expected) in [
        (ms(300), None, ms(300)),
        (ms(300), Some(ms(0)), ms(300)),
        (ms(300), Some(ms(100)), ms(300)),
        (ms(300), Some(ms(700)), ms(700)),
        (ms(300), Some(ms(5000)), max),
        (ms(50), Some(Duration::ZERO), ms(50)),
    ] {
        assert_eq!(
            retry_delay(schedule, asked, max),
            expected,
            "{schedule:?} {asked:?}"
        );
    }
}

#[tokio::test]
async fn retry_after_zero_is_not_a_tight_loop() {
    let (_d, ob, ids) = setup(2);
    let zero = || SinkError::Transient {
        message: "503".into(),
        retry_after: Some(Duration::ZERO),
    };
    let (s, received) = sink((0..10).map(|_| zero()).collect(), 10);
    let mut opts = drain_opts();
    opts.policy.max = Duration::from_millis(200);
    let started = Instant::now();
    let r = forward(s, ob.clone(), opts).await.unwrap();
    assert_eq!(r.delivered, 2);
    assert_eq!(*received.lock().unwrap(), ids);
    // every wait is at least the schedule's floor of 50 ms
    assert!(
        started.elapsed() >= Duration::from_millis(10 * 50),
        "10 retries took {:?}",
        started.elapsed()
    );
}

/// Fails with the scripted messages, noting at each attempt when the outbox
/// says the sink's last error happened.
struct WatchingSink {
    outbox: SharedOutbox,
    script: VecDeque<&'static str>,
    seen: Arc<Mutex<Vec<Option<Timestamp>>>>,
}

impl Sink for WatchingSink {
    fn name(&self) -> &'static str {
        "watching"
    }
    fn max_batch(&self) -> usize {
        10
    }
    async fn send(&mut self, _batch: &[Sample]) -> Result<(), SinkError> {
        let at = self
            .outbox
            .call(|o| o.sink_state("watching"))
            .await
            .unwrap()
            .last_error_at;
        self.seen.lock().unwrap().push(at);
        match self.script.pop_front() {
            Some(m) => Err(SinkError::transient(m)),
            None => Ok(()),
        }
    }
}

#[tokio::test]
async fn an_outage_is_recorded_when_it_changes_not_per_attempt() {
    let (_d, ob, _) = setup(1);
    let seen = Arc::new(Mutex::new(vec![]));
    let sink = WatchingSink {
        outbox: ob.clone(),
        script: ["down", "down", "down", "down", "other", "other", "down"].into(),
        seen: seen.clone(),
    };
    let r = forward(sink, ob.clone(), drain_opts()).await.unwrap();
    assert_eq!(r.delivered, 1);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 8);
    assert_eq!(seen[0], None);
    // "down" recorded once for attempts 1-4, "other" once, "down" again once
    let changes: Vec<usize> = (1..seen.len())
        .filter(|&i| seen[i] != seen[i - 1])
        .collect();
    assert_eq!(changes, [1, 5, 7], "{seen:?}");
    let st = ob.call(|o| o.sink_state("watching")).await.unwrap();
    assert_eq!(st.last_error.as_deref(), Some("down"));
}

#[test]
fn the_schedule_doubles_from_500_ms_up_to_the_cap() {
    let ms = Duration::from_millis;
    let p = RetryPolicy::with_max(Duration::from_secs(20));
    assert_eq!(p.min, ms(500));
    // Full jitter: the n-th wait is uniform in [0, min(500 ms * 2^n, cap)].
    // Over 400 schedules each bound is never passed and is nearly reached
    // (all 400 below 90% of it has probability 0.9^400, about 5e-19).
    let runs: Vec<Vec<Duration>> = (0..400).map(|_| p.delays().take(8).collect()).collect();
    for n in 0..8 {
        let bound = (ms(500) * 2u32.pow(n as u32)).min(p.max);
        let longest = runs.iter().map(|r| r[n]).max().unwrap();
        assert!(
            longest <= bound && longest > bound.mul_f64(0.9),
            "wait {n}: longest {longest:?}, expected just under {bound:?}"
        );
    }
}

/// Answers each send after `answer_after`, saying when a send has started.
struct SlowSink {
    answer_after: Duration,
    started: Arc<Notify>,
    received: Arc<Mutex<Vec<uuid::Uuid>>>,
}

impl Sink for SlowSink {
    fn name(&self) -> &'static str {
        "slow"
    }
    fn max_batch(&self) -> usize {
        100
    }
    async fn send(&mut self, batch: &[Sample]) -> Result<(), SinkError> {
        self.started.notify_one();
        tokio::time::sleep(self.answer_after).await;
        self.received
            .lock()
            .unwrap()
            .extend(batch.iter().map(|s| s.id));
        Ok(())
    }
}

/// Follows the outbox with a sink answering after `answer_after`, shuts down
/// while the first batch is in flight, and returns the report and what the
/// sink received.
async fn shutdown_mid_send(
    ob: &SharedOutbox,
    answer_after: Duration,
    grace: Duration,
) -> (ForwardReport, Vec<uuid::Uuid>) {
    let started = Arc::new(Notify::new());
    let received = Arc::new(Mutex::new(vec![]));
    let sink = SlowSink {
        answer_after,
        started: started.clone(),
        received: received.clone(),
    };
    let shutdown = CancellationToken::new();
    let mut opts = ForwardOptions::new(Mode::Follow, Duration::from_secs(60), shutdown.clone());
    assert_eq!(opts.grace, Duration::from_secs(5), "the documented grace");
    opts.grace = grace;
    opts.send_timeout = Duration::from_secs(3600);
    let task = tokio::spawn(forward(sink, ob.clone(), opts));
    tokio::time::timeout(Duration::from_secs(30), started.notified())
        .await
        .expect("the first send never started");
    shutdown.cancel();
    let report = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the forwarder did not stop after its grace")
        .unwrap()
        .unwrap();
    let received = received.lock().unwrap().clone();
    (report, received)
}

#[tokio::test]
async fn shutdown_abandons_a_batch_still_in_flight_after_the_grace_without_acking() {
    let (_d, ob, _) = setup(3);
    let (r, received) =
        shutdown_mid_send(&ob, Duration::from_secs(3600), Duration::from_millis(300)).await;
    assert!(r.interrupted);
    assert!(received.is_empty());
    assert_eq!(
        ob.call(|o| o.pending_count("slow")).await.unwrap(),
        3,
        "an abandoned batch is not acked: it is sent again next time"
    );
}

#[tokio::test]
async fn shutdown_lets_a_batch_finish_within_the_grace_and_acks_it() {
    let (_d, ob, ids) = setup(3);
    let (r, received) =
        shutdown_mid_send(&ob, Duration::from_millis(300), Duration::from_secs(30)).await;
    assert!(r.interrupted);
    assert_eq!(received, ids);
    assert_eq!(ob.call(|o| o.pending_count("slow")).await.unwrap(), 0);
}

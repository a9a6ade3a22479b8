//! `rampart bench watch-fanout`: many watchers on one key and one writer. Measures how many
//! events the cluster delivers per second and how long each takes from the put being sent to
//! the event being received, and checks that every watcher saw every revision once, in order.
//!
//! Each value carries its sequence number and its send time (nanoseconds since the run's
//! origin; writer and watchers share the process, hence the clock).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::{BenchArgs, latency_histogram, latency_line};
use crate::api::proto::etcdserverpb as pb;
use crate::api::proto::etcdserverpb::kv_client::KvClient;
use crate::api::proto::etcdserverpb::watch_client::WatchClient;
use crate::api::proto::mvccpb;
use crate::cli::CliError;
use crate::cli::client::parse_duration;
use crate::cli::grpc::status_message;
use crate::cli::output::OutputFormat;

/// Bytes of a value taken by the sequence number and the send time.
const STAMP_LEN: usize = 16;

/// Watch fan-out arguments.
#[derive(Debug, Args)]
pub struct FanoutArgs {
    /// Watchers in total, spread evenly over the streams.
    #[arg(long, default_value_t = 1)]
    watchers: usize,
    /// Watch streams (Watch calls), spread over the --conns connections.
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Values put to the key, one after another.
    #[arg(long, default_value_t = 1000)]
    puts: u64,
    /// Value size in bytes (at least 16: a sequence number and a send time).
    #[arg(long, default_value_t = 256)]
    val_size: usize,
    /// Puts per second; 0 sends each put as soon as the previous one is acknowledged.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// The key written and watched (`--key` is the client key file).
    #[arg(long = "watch-key", default_value = "bench-watch-fanout")]
    key: String,
    /// Give up with an error when creating the watchers, or putting and delivering every
    /// event, takes longer than this (each phase has its own limit).
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    timeout: Duration,
}

/// What one watcher has received so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Tally {
    /// The sequence number expected next; the watcher is complete at `puts`.
    next_seq: u64,
    last_rev: i64,
    /// The revisions received, folded in order: compared with the writer's at the end, so that
    /// a watcher is checked against the put revisions without keeping them all.
    rev_hash: u64,
    faults: u64,
}

impl Tally {
    /// Takes one event; says what was wrong with it, if anything.
    fn take(&mut self, seq: u64, rev: i64) -> Option<String> {
        let fault = if seq < self.next_seq {
            Some(format!("put {seq} delivered again (revision {rev})"))
        } else if seq > self.next_seq {
            Some(format!(
                "puts {}..{} missing before revision {rev}",
                self.next_seq, seq
            ))
        } else if rev <= self.last_rev {
            Some(format!("revision {rev} delivered after {}", self.last_rev))
        } else {
            None
        };
        if seq >= self.next_seq {
            self.next_seq = seq + 1;
            self.last_rev = self.last_rev.max(rev);
            self.rev_hash = fold_revision(self.rev_hash, rev);
        }
        if fault.is_some() {
            self.faults += 1;
        }
        fault
    }
}

/// One FNV-1a step over a whole revision.
fn fold_revision(hash: u64, rev: i64) -> u64 {
    (hash ^ rev as u64).wrapping_mul(0x0000_0100_0000_01b3)
}

/// A value of `len` bytes (at least [`STAMP_LEN`]) carrying `seq` and `sent_ns`.
fn stamp(seq: u64, sent_ns: u64, len: usize) -> Vec<u8> {
    let mut value = Vec::with_capacity(len.max(STAMP_LEN));
    value.extend_from_slice(&seq.to_be_bytes());
    value.extend_from_slice(&sent_ns.to_be_bytes());
    value.resize(len.max(STAMP_LEN), b'x');
    value
}

/// The sequence number and send time of a value written by [`stamp`].
fn read_stamp(value: &[u8]) -> Option<(u64, u64)> {
    let seq = value.get(..8)?.try_into().ok()?;
    let sent = value.get(8..STAMP_LEN)?.try_into().ok()?;
    Some((u64::from_be_bytes(seq), u64::from_be_bytes(sent)))
}

/// How many watchers each of `streams` streams opens, `watchers` in all.
fn split(watchers: usize, streams: usize) -> Vec<usize> {
    (0..streams)
        .map(|i| watchers / streams + usize::from(i < watchers % streams))
        .collect()
}

/// What one stream saw.
struct StreamOutcome {
    /// Watchers it was to create.
    planned: usize,
    /// Index of the endpoint it was opened on.
    endpoint: usize,
    latency_us: Histogram<u64>,
    events: u64,
    /// When the last event arrived, in nanoseconds since the origin.
    last_event_ns: u64,
    tallies: Vec<Tally>,
    /// Watchers created but never complete (fewer events than puts).
    faults: u64,
    first_fault: Option<String>,
    /// Why the stream ended before every watcher was complete.
    error: Option<String>,
}

/// A stream task's view of the run.
struct StreamPlan {
    channel: Channel,
    endpoint: usize,
    key: Vec<u8>,
    watchers: usize,
    puts: u64,
    origin: Instant,
    created: Arc<AtomicUsize>,
    ready: mpsc::Sender<Result<(), String>>,
    stop: watch::Receiver<bool>,
}

/// Opens one watch stream with `plan.watchers` watchers and follows it until every watcher has
/// the last put, the stream fails, or the run is stopped.
async fn follow_stream(plan: StreamPlan) -> StreamOutcome {
    let StreamPlan {
        channel,
        endpoint,
        key,
        watchers: count,
        puts,
        origin,
        created,
        ready,
        mut stop,
    } = plan;
    let mut out = StreamOutcome {
        planned: count,
        endpoint,
        latency_us: latency_histogram(),
        events: 0,
        last_event_ns: 0,
        tallies: Vec::new(),
        faults: 0,
        first_fault: None,
        error: None,
    };
    // Every create request is queued before the call: the channel has room for all of them,
    // and the sender stays alive (a closed request side ends the stream on etcd).
    let (requests, queue) = mpsc::channel(count + 1);
    for _ in 0..count {
        let create = pb::WatchCreateRequest {
            key: key.clone(),
            ..Default::default()
        };
        let request = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
        };
        if requests.try_send(request).is_err() {
            out.error = Some("cannot queue watch create requests".into());
            let _ = ready.send(Err(out.error.clone().unwrap_or_default())).await;
            return out;
        }
    }
    let mut client = WatchClient::new(channel).max_decoding_message_size(usize::MAX);
    let opened = tokio::select! {
        opened = client.watch(ReceiverStream::new(queue)) => opened,
        _ = stop.changed() => {
            out.error = Some("stopped before the watch stream opened".into());
            return out;
        }
    };
    let mut stream = match opened {
        Ok(response) => response.into_inner(),
        Err(status) => {
            let error = format!("cannot open a watch stream: {}", status_message(&status));
            let _ = ready.send(Err(error.clone())).await;
            out.error = Some(error);
            return out;
        }
    };
    let mut tallies: HashMap<i64, Tally> = HashMap::with_capacity(count);
    let mut ready = Some(ready);
    // Complete watchers were all created, so this also waits for every creation.
    let mut complete = 0usize;
    while complete < count {
        let message = tokio::select! {
            message = stream.message() => message,
            _ = stop.changed() => break,
        };
        let resp = match message {
            Ok(Some(resp)) => resp,
            Ok(None) => {
                out.error = Some("the server closed the watch stream".into());
                break;
            }
            Err(status) => {
                out.error = Some(format!("watch stream failed: {}", status_message(&status)));
                break;
            }
        };
        if resp.created {
            if resp.canceled || resp.watch_id < 0 {
                out.error = Some(format!("watch refused: {}", resp.cancel_reason));
                break;
            }
            if tallies.insert(resp.watch_id, Tally::default()).is_some() {
                out.error = Some(format!("watch ID {} created twice", resp.watch_id));
                break;
            }
            created.fetch_add(1, Ordering::Relaxed);
            if tallies.len() == count
                && let Some(ready) = ready.take()
            {
                let _ = ready.send(Ok(())).await;
            }
        } else if resp.canceled {
            out.error = Some(format!(
                "watch {} canceled by the server: {} (compact revision {})",
                resp.watch_id, resp.cancel_reason, resp.compact_revision
            ));
            break;
        }
        if resp.events.is_empty() {
            continue;
        }
        // One clock reading per response: its events arrived together.
        let now_ns = origin.elapsed().as_nanos() as u64;
        let Some(tally) = tallies.get_mut(&resp.watch_id) else {
            fault(
                &mut out,
                format!("events for unknown watch ID {}", resp.watch_id),
            );
            continue;
        };
        for event in &resp.events {
            let Some(kv) = event.kv.as_ref() else {
                fault(&mut out, "an event without a key-value".into());
                continue;
            };
            let stamped = read_stamp(&kv.value);
            let (Some((seq, sent_ns)), true, true) = (
                stamped,
                kv.key == key,
                event.r#type == mvccpb::event::EventType::Put as i32,
            ) else {
                fault(
                    &mut out,
                    format!(
                        "an event this run did not write at revision {} (another writer on the key?)",
                        kv.mod_revision
                    ),
                );
                continue;
            };
            out.events += 1;
            out.latency_us
                .saturating_record(now_ns.saturating_sub(sent_ns) / 1000);
            let was_complete = tally.next_seq >= puts;
            if let Some(text) = tally.take(seq, kv.mod_revision) {
                fault(&mut out, format!("watch {}: {text}", resp.watch_id));
            }
            if !was_complete && tally.next_seq >= puts {
                complete += 1;
            }
        }
        out.last_event_ns = now_ns;
    }
    if let Some(ready) = ready {
        let why = out
            .error
            .clone()
            .unwrap_or_else(|| "stopped before every watcher was created".into());
        let _ = ready.send(Err(why)).await;
    }
    out.tallies = tallies.into_values().collect();
    out
}

fn fault(out: &mut StreamOutcome, text: String) {
    out.faults += 1;
    out.first_fault.get_or_insert(text);
}

/// What the writer did.
struct Writes {
    first_put_ns: u64,
    done: u64,
    rev_hash: u64,
    latency_us: Histogram<u64>,
}

/// Puts `puts` stamped values to `key`, paced at `rate` per second (0: back to back).
async fn write(
    writer: Channel,
    args: &FanoutArgs,
    command_timeout: Duration,
    origin: Instant,
    deadline: tokio::time::Instant,
) -> Result<Writes, (Writes, String)> {
    let mut kv = KvClient::new(writer);
    let mut w = Writes {
        first_put_ns: 0,
        done: 0,
        rev_hash: 0,
        latency_us: latency_histogram(),
    };
    let start = tokio::time::Instant::now();
    let interval = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    for seq in 0..args.puts {
        if let Some(interval) = interval {
            // A steady schedule: a late put is sent at once, the next ones keep their slots.
            tokio::time::sleep_until(start + interval.mul_f64(seq as f64)).await;
        }
        let sent = Instant::now();
        let sent_ns = origin.elapsed().as_nanos() as u64;
        if seq == 0 {
            w.first_put_ns = sent_ns;
        }
        let put = kv.put(pb::PutRequest {
            key: args.key.as_bytes().to_vec(),
            value: stamp(seq, sent_ns, args.val_size),
            ..Default::default()
        });
        let limit = deadline.min(tokio::time::Instant::now() + command_timeout);
        let revision = match tokio::time::timeout_at(limit, put).await {
            Ok(Ok(r)) => r.into_inner().header.map(|h| h.revision).unwrap_or(0),
            Ok(Err(status)) => {
                let e = format!("put {seq} failed: {}", status_message(&status));
                return Err((w, e));
            }
            Err(_) => return Err((w, format!("put {seq} timed out"))),
        };
        super::record_since(&mut w.latency_us, sent);
        w.rev_hash = fold_revision(w.rev_hash, revision);
        w.done += 1;
    }
    Ok(w)
}

/// Runs the fan-out benchmark and prints its report; any missing, repeated or reordered event,
/// failed stream or timeout makes it fail after the report.
pub(super) async fn run(
    common: &BenchArgs,
    args: &FanoutArgs,
    endpoints: &[String],
    channels: &[Channel],
    writer: Channel,
    format: OutputFormat,
) -> Result<(), CliError> {
    if args.watchers == 0 || args.streams == 0 || args.puts == 0 {
        return Err(anyhow!("--watchers, --streams and --puts must be at least 1").into());
    }
    if args.streams > args.watchers {
        return Err(anyhow!("--streams must not exceed --watchers").into());
    }
    if args.val_size < STAMP_LEN {
        return Err(anyhow!(
            "--val-size must be at least {STAMP_LEN}: each value carries a sequence number and a send time"
        )
        .into());
    }
    if !args.rate.is_finite() || args.rate < 0.0 {
        return Err(anyhow!("--rate must be a number of puts per second, 0 or more").into());
    }
    let origin = Instant::now();
    let created = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::channel(args.streams);
    let mut tasks = Vec::new();
    for (i, count) in split(args.watchers, args.streams).into_iter().enumerate() {
        // Connection c was opened to endpoint c % endpoints (see `run_async`).
        let conn = i % channels.len();
        tasks.push(tokio::spawn(follow_stream(StreamPlan {
            channel: channels[conn].clone(),
            endpoint: conn % endpoints.len().max(1),
            key: args.key.as_bytes().to_vec(),
            watchers: count,
            puts: args.puts,
            origin,
            created: created.clone(),
            ready: ready_tx.clone(),
            stop: stop_rx.clone(),
        })));
    }
    drop(ready_tx);

    let mut failure: Option<String> = None;
    let create_deadline = tokio::time::Instant::now() + args.timeout;
    for _ in 0..args.streams {
        match tokio::time::timeout_at(create_deadline, ready_rx.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => {
                failure = Some(e);
                break;
            }
            Ok(None) => {
                failure = Some("a watch stream ended before its watchers were created".into());
                break;
            }
            Err(_) => {
                failure = Some(format!(
                    "only {} of {} watchers created within {:?}",
                    created.load(Ordering::Relaxed),
                    args.watchers,
                    args.timeout
                ));
                break;
            }
        }
    }
    let create_time = origin.elapsed();

    let all = futures_util::future::join_all(tasks);
    tokio::pin!(all);
    let mut writes = None;
    let mut joined = None;
    if failure.is_none() {
        let deadline = tokio::time::Instant::now() + args.timeout;
        let timeout = common.conn.command_timeout;
        match write(writer, args, timeout, origin, deadline).await {
            Ok(w) => writes = Some(w),
            Err((w, e)) => {
                writes = Some(w);
                failure = Some(e);
            }
        }
        if failure.is_none() {
            // Every stream ends by itself once its watchers have the last put.
            match tokio::time::timeout_at(deadline, &mut all).await {
                Ok(results) => joined = Some(results),
                Err(_) => {
                    failure = Some(format!(
                        "not every event was delivered within {:?} of the first put",
                        args.timeout
                    ))
                }
            }
        }
    }
    // The streams still running stop now and hand in what they saw.
    let _ = stop_tx.send(true);
    let joined = match joined {
        Some(results) => results,
        None => all.await,
    };
    let mut outcomes = Vec::new();
    for result in joined {
        match result {
            Ok(outcome) => outcomes.push(outcome),
            Err(e) => {
                failure.get_or_insert_with(|| format!("a watch stream task failed: {e}"));
            }
        }
    }
    let report = FanoutReport::new(args, endpoints, &outcomes, writes.as_ref(), create_time);
    report.print(common, args, format);
    if let Some(e) = failure.or_else(|| report.fault_text()) {
        return Err(anyhow!(e).into());
    }
    Ok(())
}

/// The whole run, summed over streams.
struct FanoutReport {
    create_time: Duration,
    events: u64,
    expected: u64,
    /// First put sent to last event received.
    elapsed: Duration,
    latency_us: Histogram<u64>,
    /// Delivery latency by the endpoint the watchers were on: a member that applies late shows.
    by_endpoint: BTreeMap<String, Histogram<u64>>,
    put_latency_us: Option<Histogram<u64>>,
    puts_done: u64,
    /// Watchers that did not see every put.
    incomplete: u64,
    /// Watchers that saw every put, but not at the revisions the writer was given.
    wrong_revisions: u64,
    faults: u64,
    first_fault: Option<String>,
    stream_error: Option<String>,
}

impl FanoutReport {
    fn new(
        args: &FanoutArgs,
        endpoints: &[String],
        outcomes: &[StreamOutcome],
        writes: Option<&Writes>,
        create_time: Duration,
    ) -> FanoutReport {
        let mut r = FanoutReport {
            create_time,
            events: 0,
            expected: args.watchers as u64 * args.puts,
            elapsed: Duration::ZERO,
            latency_us: latency_histogram(),
            by_endpoint: BTreeMap::new(),
            put_latency_us: writes.map(|w| w.latency_us.clone()),
            puts_done: writes.map_or(0, |w| w.done),
            incomplete: 0,
            wrong_revisions: 0,
            faults: 0,
            first_fault: None,
            stream_error: None,
        };
        let mut last_event_ns = 0;
        for o in outcomes {
            r.events += o.events;
            let _ = r.latency_us.add(&o.latency_us);
            let name = endpoints.get(o.endpoint).cloned().unwrap_or_default();
            let _ = r
                .by_endpoint
                .entry(name)
                .or_insert_with(latency_histogram)
                .add(&o.latency_us);
            last_event_ns = last_event_ns.max(o.last_event_ns);
            r.faults += o.faults;
            if r.first_fault.is_none() {
                r.first_fault = o.first_fault.clone();
            }
            if r.stream_error.is_none() {
                r.stream_error = o.error.clone();
            }
            // Watchers never created count as incomplete too.
            r.incomplete += o.planned.saturating_sub(o.tallies.len()) as u64;
            for t in &o.tallies {
                if t.next_seq < args.puts {
                    r.incomplete += 1;
                } else if t.faults == 0
                    && let Some(w) = writes
                    && w.done == args.puts
                    && t.rev_hash != w.rev_hash
                {
                    r.wrong_revisions += 1;
                }
            }
        }
        if let Some(w) = writes {
            r.elapsed = Duration::from_nanos(last_event_ns.saturating_sub(w.first_put_ns));
        }
        r
    }

    /// Why the run counts as failed, from what the watchers saw.
    fn fault_text(&self) -> Option<String> {
        if self.faults == 0 && self.incomplete == 0 && self.wrong_revisions == 0 {
            return None;
        }
        let mut text = format!(
            "{} of {} events delivered; {} watchers incomplete, {} with other revisions than the writer's, {} faulty events",
            self.events, self.expected, self.incomplete, self.wrong_revisions, self.faults
        );
        if let Some(first) = self.first_fault.as_ref().or(self.stream_error.as_ref()) {
            text.push_str(&format!(" (first: {first})"));
        }
        Some(text)
    }

    fn print(&self, common: &BenchArgs, args: &FanoutArgs, format: OutputFormat) {
        let secs = self.elapsed.as_secs_f64();
        let rate = self.events as f64 / secs.max(1e-9);
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let put = self.put_latency_us.as_ref();
        if format == OutputFormat::Json {
            println!(
                "{}",
                json!({
                    "op": "watch-fanout", "watchers": args.watchers, "streams": args.streams,
                    "conns": common.conns, "puts": args.puts, "rate": args.rate,
                    "val_size": args.val_size, "create_seconds": self.create_time.as_secs_f64(),
                    "events": self.events, "expected_events": self.expected,
                    "incomplete_watchers": self.incomplete, "faults": self.faults,
                    "seconds": secs, "events_per_sec": rate,
                    "p50_ms": ms(&self.latency_us, 0.5), "p90_ms": ms(&self.latency_us, 0.9),
                    "p99_ms": ms(&self.latency_us, 0.99),
                    "max_ms": self.latency_us.max() as f64 / 1000.0,
                    "by_endpoint": self.by_endpoint.iter().map(|(e, h)| json!({
                        "endpoint": e, "events": h.len(), "p50_ms": ms(h, 0.5),
                        "p99_ms": ms(h, 0.99), "max_ms": h.max() as f64 / 1000.0,
                    })).collect::<Vec<_>>(),
                    "puts_done": self.puts_done,
                    "put_p50_ms": put.map(|h| ms(h, 0.5)), "put_p99_ms": put.map(|h| ms(h, 0.99)),
                })
            );
            return;
        }
        let pace = if args.rate > 0.0 {
            format!("at {}/s", args.rate)
        } else {
            "back to back".to_owned()
        };
        println!(
            "watch-fanout: {} watchers on {} streams over {} connections, {} puts {pace}",
            args.watchers, args.streams, common.conns, args.puts
        );
        println!(
            "  created    {:.3} s (all watchers)",
            self.create_time.as_secs_f64()
        );
        println!("  total      {secs:.3} s (first put to last event)");
        println!("  events/s   {rate:.0}");
        println!("  events     {} of {}", self.events, self.expected);
        println!("{}", latency_line("latency ms", &self.latency_us));
        if self.by_endpoint.len() > 1 {
            for (endpoint, h) in &self.by_endpoint {
                println!("  {endpoint}");
                println!("{}", latency_line("  at", h));
            }
        }
        if let Some(h) = put {
            println!("{}", latency_line("put ms", h));
        }
        if let Some(text) = self.fault_text() {
            println!("  errors     {text}");
        } else if let Some(e) = &self.stream_error {
            println!("  errors     {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_carry_their_sequence_and_send_time() {
        let v = stamp(7, 123_456_789, 256);
        assert_eq!(v.len(), 256);
        assert_eq!(read_stamp(&v), Some((7, 123_456_789)));
        assert_eq!(stamp(1, 2, 3).len(), STAMP_LEN);
        assert_eq!(read_stamp(b"short"), None);
    }

    #[test]
    fn watchers_spread_evenly_over_streams() {
        assert_eq!(split(10, 3), vec![4, 3, 3]);
        assert_eq!(split(10_000, 10), vec![1000; 10]);
        assert_eq!(split(1, 1), vec![1]);
    }

    #[test]
    fn a_tally_accepts_each_put_once_in_order() {
        let mut t = Tally::default();
        assert_eq!(t.take(0, 10), None);
        assert_eq!(t.take(1, 11), None);
        assert!(t.take(1, 11).is_some(), "a repeat is a fault");
        assert!(t.take(3, 13).is_some(), "a gap is a fault");
        assert!(t.take(4, 12).is_some(), "a revision going back is a fault");
        assert_eq!(t.faults, 3);
        assert_eq!(t.next_seq, 5);
    }

    #[test]
    fn revisions_fold_to_the_writers_hash_only_when_equal() {
        let mut good = Tally::default();
        let mut other = Tally::default();
        let writer = [5, 6, 9].iter().fold(0, |h, &r| fold_revision(h, r));
        for (seq, rev) in [5, 6, 9].iter().enumerate() {
            good.take(seq as u64, *rev);
        }
        for (seq, rev) in [5, 7, 9].iter().enumerate() {
            other.take(seq as u64, *rev);
        }
        assert_eq!(good.rev_hash, writer);
        assert_ne!(other.rev_hash, writer);
    }
}

//! `rampart bench lease-keepalive`: grants leases, then renews them over `--clients`
//! keep-alive streams (one request in flight on each, round-robin over the leases), and revokes
//! them at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant as Deadline;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::{BenchArgs, Report, latency_histogram, print_report, record_since};
use crate::api::proto::etcdserverpb as pb;
use crate::api::proto::etcdserverpb::lease_client::LeaseClient;
use crate::cli::CliError;
use crate::cli::client::parse_duration;
use crate::cli::grpc::status_message;
use crate::cli::output::OutputFormat;

/// Grants and revokes in flight at once.
const ADMIN_CONCURRENCY: usize = 64;

/// Lease keep-alive arguments.
#[derive(Debug, Args)]
pub struct KeepaliveArgs {
    /// Leases granted, then renewed round-robin.
    #[arg(long, default_value_t = 1)]
    leases: usize,
    /// TTL of each lease, in seconds (long enough to outlast the run).
    #[arg(long, default_value_t = 60)]
    ttl: i64,
    /// Give up with an error when granting, or the keep-alives, take longer than this (each
    /// phase has its own limit).
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    timeout: Duration,
}

/// Runs `jobs` calls of `call` with up to [`ADMIN_CONCURRENCY`] in flight, spread over the
/// channels; returns the results in job order.
async fn each<T, F, Fut>(channels: &[Channel], jobs: usize, call: F) -> Vec<anyhow::Result<T>>
where
    T: Send + 'static,
    F: Fn(LeaseClient<Channel>, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..ADMIN_CONCURRENCY.min(jobs) {
        let client = LeaseClient::new(channels[w % channels.len()].clone());
        let (next, call) = (next.clone(), call.clone());
        workers.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let job = next.fetch_add(1, Ordering::Relaxed);
                if job >= jobs {
                    return done;
                }
                done.push((job, call(client.clone(), job).await));
            }
        }));
    }
    let mut results: Vec<(usize, anyhow::Result<T>)> = Vec::with_capacity(jobs);
    for worker in workers {
        match worker.await {
            Ok(done) => results.extend(done),
            Err(e) => results.push((usize::MAX, Err(anyhow!("a worker failed: {e}")))),
        }
    }
    results.sort_by_key(|(job, _)| *job);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Grants `args.leases` leases; on any failure revokes those granted and fails.
async fn grant(
    channels: &[Channel],
    args: &KeepaliveArgs,
    limit: Duration,
) -> anyhow::Result<Vec<i64>> {
    let ttl = args.ttl;
    let results = each(channels, args.leases, move |mut client, _| async move {
        let call = client.lease_grant(pb::LeaseGrantRequest { ttl, id: 0 });
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(r)) => Ok(r.into_inner().id),
            Ok(Err(status)) => Err(anyhow!("lease grant failed: {}", status_message(&status))),
            Err(_) => Err(anyhow!("lease grant timed out after {limit:?}")),
        }
    })
    .await;
    let mut ids = Vec::with_capacity(results.len());
    let mut first_error = None;
    for r in results {
        match r {
            Ok(id) => ids.push(id),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        None => Ok(ids),
        Some(e) => {
            revoke(channels, ids, limit).await;
            Err(e)
        }
    }
}

/// Revokes the leases, best effort: the bench's leases would expire after their TTL anyway.
async fn revoke(channels: &[Channel], ids: Vec<i64>, limit: Duration) {
    let ids = Arc::new(ids);
    let jobs = ids.len();
    let _ = each(channels, jobs, move |mut client, job| {
        let id = ids[job];
        async move {
            let call = client.lease_revoke(pb::LeaseRevokeRequest { id });
            let _ = tokio::time::timeout(limit, call).await;
            Ok(())
        }
    })
    .await;
}

/// What one keep-alive stream measured.
struct ClientTally {
    latency_us: Histogram<u64>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
}

fn fail(tally: &mut ClientTally, e: String) {
    tally.errors += 1;
    tally.first_error.get_or_insert(e);
}

/// One keep-alive stream: renews `leases[n % len]` for each `n` it draws, one at a time, until
/// `total` are drawn. Stops at its first failure (the stream's state is unknown then).
async fn keep_alive(
    channel: Channel,
    leases: Arc<Vec<i64>>,
    next: Arc<AtomicU64>,
    total: u64,
    limit: Duration,
    deadline: Deadline,
) -> ClientTally {
    let mut tally = ClientTally {
        latency_us: latency_histogram(),
        ok: 0,
        errors: 0,
        first_error: None,
    };
    let Some(&first) = leases.first() else {
        return tally;
    };
    let (requests, queue) = mpsc::channel(1);
    // The first request is queued before the call, and not measured: its answer also
    // waits for the stream to open.
    if requests
        .try_send(pb::LeaseKeepAliveRequest { id: first })
        .is_err()
    {
        fail(&mut tally, "cannot queue a keep-alive request".into());
        return tally;
    }
    let mut client = LeaseClient::new(channel);
    let until = deadline.min(Deadline::now() + limit);
    let opened = tokio::time::timeout_at(until, async {
        let mut stream = client
            .lease_keep_alive(ReceiverStream::new(queue))
            .await?
            .into_inner();
        stream.message().await.map(|m| (stream, m))
    })
    .await;
    let mut stream = match opened {
        Ok(Ok((stream, Some(_)))) => stream,
        Ok(Ok((_, None))) => {
            fail(&mut tally, "the server closed the keep-alive stream".into());
            return tally;
        }
        Ok(Err(status)) => {
            let e = format!("keep-alive stream failed: {}", status_message(&status));
            fail(&mut tally, e);
            return tally;
        }
        Err(_) => {
            fail(&mut tally, "opening a keep-alive stream timed out".into());
            return tally;
        }
    };
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= total {
            return tally;
        }
        let id = leases[(n % leases.len() as u64) as usize];
        let start = Instant::now();
        let until = deadline.min(Deadline::now() + limit);
        let answer = tokio::time::timeout_at(until, async {
            if requests
                .send(pb::LeaseKeepAliveRequest { id })
                .await
                .is_err()
            {
                return Err("the keep-alive stream closed".to_owned());
            }
            match stream.message().await {
                Ok(Some(r)) => Ok(r),
                Ok(None) => Err("the server closed the keep-alive stream".to_owned()),
                Err(status) => Err(format!(
                    "keep-alive stream failed: {}",
                    status_message(&status)
                )),
            }
        })
        .await;
        match answer {
            Ok(Ok(r)) if r.id == id && r.ttl > 0 => {
                record_since(&mut tally.latency_us, start);
                tally.ok += 1;
            }
            Ok(Ok(r)) if r.id == id => {
                // TTL 0 is etcd's answer for a lease it does not know (expired or revoked).
                fail(
                    &mut tally,
                    format!("lease {id:016x} not renewed (TTL {})", r.ttl),
                );
                return tally;
            }
            Ok(Ok(r)) => {
                let e = format!("renewed lease {:016x}, asked for {id:016x}", r.id);
                fail(&mut tally, e);
                return tally;
            }
            Ok(Err(e)) => {
                fail(&mut tally, e);
                return tally;
            }
            Err(_) => {
                fail(
                    &mut tally,
                    format!("keep-alive of lease {id:016x} timed out"),
                );
                return tally;
            }
        }
    }
}

/// Runs the keep-alive benchmark and prints its report; fails after the report when any
/// keep-alive failed or was not answered with a renewal.
pub(super) async fn run(
    common: &BenchArgs,
    args: &KeepaliveArgs,
    channels: &[Channel],
    format: OutputFormat,
) -> Result<(), CliError> {
    if args.leases == 0 || args.ttl <= 0 {
        return Err(anyhow!("--leases and --ttl must be at least 1").into());
    }
    let limit = common.conn.command_timeout;
    let grant_start = Instant::now();
    let granted = tokio::time::timeout(args.timeout, grant(channels, args, limit))
        .await
        .map_err(|_| {
            anyhow!(
                "granting {} leases took over {:?}",
                args.leases,
                args.timeout
            )
        })??;
    let grant_time = grant_start.elapsed();
    let leases = Arc::new(granted);
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Deadline::now() + args.timeout;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..common.clients {
        tasks.push(tokio::spawn(keep_alive(
            channels[c % channels.len()].clone(),
            leases.clone(),
            next.clone(),
            common.total,
            limit,
            deadline,
        )));
    }
    let mut report = Report {
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency_us: latency_histogram(),
        first_error: None,
    };
    for task in tasks {
        match task.await {
            Ok(t) => {
                let _ = report.latency_us.add(&t.latency_us);
                report.ok += t.ok;
                report.errors += t.errors;
                if report.first_error.is_none() {
                    report.first_error = t.first_error;
                }
            }
            Err(e) => {
                report.errors += 1;
                report
                    .first_error
                    .get_or_insert_with(|| format!("a client task failed: {e}"));
            }
        }
    }
    report.elapsed = start.elapsed();
    revoke(channels, leases.to_vec(), limit).await;
    let extra = [
        ("leases", json!(args.leases)),
        ("ttl", json!(args.ttl)),
        ("grant_seconds", json!(grant_time.as_secs_f64())),
    ];
    print_report("lease-keepalive", common, &report, format, &extra);
    let unanswered = common.total.saturating_sub(report.ok);
    if report.errors > 0 || unanswered > 0 {
        return Err(anyhow!(
            "{unanswered} of {} keep-alives not renewed (first error: {})",
            common.total,
            report.first_error.unwrap_or_else(|| "none".into())
        )
        .into());
    }
    Ok(())
}

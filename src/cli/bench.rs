//! `rampart bench put|range|watch-fanout|lease-keepalive`: a load generator for any etcd v3
//! endpoint (rampart or etcd), printing throughput and latency percentiles.

mod fanout;
mod keepalive;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use clap::{Args, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::json;
use tonic::transport::Channel;

use super::CliError;
use super::client::ConnArgs;
use super::grpc::status_message;
use super::output::OutputFormat;
use crate::api::proto::etcdserverpb as pb;
use crate::api::proto::etcdserverpb::kv_client::KvClient;

/// Benchmark arguments.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Concurrent clients (each has one request in flight).
    #[arg(long, global = true, default_value_t = 1)]
    clients: usize,
    /// TLS connections shared by the clients.
    #[arg(long, global = true, default_value_t = 1)]
    conns: usize,
    /// Total requests.
    #[arg(long, global = true, default_value_t = 10_000)]
    total: u64,
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Puts of random keys.
    Put {
        /// Key size in bytes.
        #[arg(long, default_value_t = 8)]
        key_size: usize,
        /// Value size in bytes.
        #[arg(long, default_value_t = 256)]
        val_size: usize,
        /// Keys are drawn from this many distinct keys.
        #[arg(long, default_value_t = 100_000)]
        key_space_size: u64,
    },
    /// Ranges over one key (written first if absent).
    Range {
        /// The key to read.
        #[arg(default_value = "bench-range-key")]
        key: String,
        /// l (linearizable) or s (serializable).
        #[arg(long, value_enum, default_value_t = Consistency::L)]
        consistency: Consistency,
    },
    /// Watchers on one key, one writer: events delivered per second and delivery latency
    /// (put sent to event received); every watcher must see every revision once, in order.
    WatchFanout(fanout::FanoutArgs),
    /// Lease keep-alives over --clients streams, one in flight each, round-robin over leases.
    LeaseKeepalive(keepalive::KeepaliveArgs),
}

/// Read consistency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    /// Linearizable (read-index).
    L,
    /// Serializable (local).
    S,
}

#[derive(Clone)]
enum Work {
    Put {
        key_size: usize,
        value: Arc<Vec<u8>>,
        key_space: u64,
    },
    Range {
        key: Vec<u8>,
        serializable: bool,
    },
}

impl Work {
    async fn once(&self, kv: &mut KvClient<Channel>, n: u64) -> Result<(), tonic::Status> {
        match self {
            Work::Put {
                key_size,
                value,
                key_space,
            } => {
                // A cheap deterministic spread over the key space (no RNG on the hot path).
                let k = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) % key_space.max(&1);
                let mut key = format!("{k:0width$}", width = *key_size).into_bytes();
                key.truncate((*key_size).max(1));
                kv.put(pb::PutRequest {
                    key,
                    value: value.as_ref().clone(),
                    ..Default::default()
                })
                .await?;
            }
            Work::Range { key, serializable } => {
                kv.range(pb::RangeRequest {
                    key: key.clone(),
                    serializable: *serializable,
                    ..Default::default()
                })
                .await?;
            }
        }
        Ok(())
    }
}

/// What a run measured.
#[derive(Debug)]
pub struct Report {
    /// Requests that succeeded.
    pub ok: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Latencies in microseconds.
    pub latency_us: Histogram<u64>,
    /// The first error seen.
    pub first_error: Option<String>,
}

/// Runs a benchmark.
pub fn run(args: BenchArgs, format: OutputFormat) -> Result<(), CliError> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    runtime.block_on(run_async(args, format))
}

async fn run_async(args: BenchArgs, format: OutputFormat) -> Result<(), CliError> {
    if args.clients == 0 || args.conns == 0 || args.total == 0 {
        return Err(anyhow!("--clients, --conns and --total must be at least 1").into());
    }
    let config = args.conn.client_config()?;
    let endpoints = args.conn.endpoint_list()?;
    if endpoints.is_empty() {
        return Err(anyhow!("no endpoints given").into());
    }
    let mut channels = Vec::new();
    for i in 0..args.conns {
        let ep = &endpoints[i % endpoints.len()];
        channels.push(args.conn.connect_one(ep, config.clone()).await?);
    }
    let (name, work) = match &args.command {
        BenchCommand::WatchFanout(fanout) => {
            // The writer is a client of its own, on a connection no watcher shares.
            let writer = args.conn.connect_one(&endpoints[0], config).await?;
            return fanout::run(&args, fanout, &endpoints, &channels, writer, format).await;
        }
        BenchCommand::LeaseKeepalive(keepalive) => {
            return keepalive::run(&args, keepalive, &channels, format).await;
        }
        BenchCommand::Put {
            key_size,
            val_size,
            key_space_size,
        } => (
            "put",
            Work::Put {
                key_size: *key_size,
                value: Arc::new(vec![b'x'; *val_size]),
                key_space: *key_space_size,
            },
        ),
        BenchCommand::Range { key, consistency } => {
            let mut kv = KvClient::new(channels[0].clone());
            let existing = kv
                .range(pb::RangeRequest {
                    key: key.as_bytes().to_vec(),
                    ..Default::default()
                })
                .await;
            if matches!(existing, Ok(ref r) if r.get_ref().kvs.is_empty()) {
                kv.put(pb::PutRequest {
                    key: key.as_bytes().to_vec(),
                    value: b"bench".to_vec(),
                    ..Default::default()
                })
                .await
                .map_err(|s| super::grpc::status_error(&s))?;
            }
            (
                "range",
                Work::Range {
                    key: key.as_bytes().to_vec(),
                    serializable: *consistency == Consistency::S,
                },
            )
        }
    };
    let report = drive(&channels, args.clients, args.total, work).await;
    print_report(name, &args, &report, format, &[]);
    if report.ok == 0 {
        return Err(anyhow!(
            "every request failed: {}",
            report.first_error.unwrap_or_default()
        )
        .into());
    }
    Ok(())
}

async fn drive(channels: &[Channel], clients: usize, total: u64, work: Work) -> Report {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut kv = KvClient::new(channels[c % channels.len()].clone());
        let next = next.clone();
        let work = work.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = latency_histogram();
            let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let t = Instant::now();
                match work.once(&mut kv, n).await {
                    Ok(()) => {
                        ok += 1;
                        record_since(&mut hist, t);
                    }
                    Err(s) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| status_message(&s));
                    }
                }
            }
            (hist, ok, errors, first_error)
        }));
    }
    let mut report = Report {
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency_us: latency_histogram(),
        first_error: None,
    };
    for t in tasks {
        if let Ok((hist, ok, errors, first_error)) = t.await {
            let _ = report.latency_us.add(&hist);
            report.ok += ok;
            report.errors += errors;
            if report.first_error.is_none() {
                report.first_error = first_error;
            }
        }
    }
    report.elapsed = start.elapsed();
    report
}

/// An empty latency histogram in microseconds: three significant digits from 1 µs to 1 min.
fn latency_histogram() -> Histogram<u64> {
    // Constant bounds that satisfy hdrhistogram's rules (1 <= low, 2 * low <= high, sigfig <= 5).
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant bounds are valid")
}

/// Records the time since `start`; anything beyond the histogram's range counts as its maximum.
fn record_since(hist: &mut Histogram<u64>, start: Instant) {
    hist.saturating_record(start.elapsed().as_micros() as u64);
}

/// The line every bench prints for a latency histogram, in milliseconds.
fn latency_line(label: &str, h: &Histogram<u64>) -> String {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "  {label:<10} p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        h.max() as f64 / 1000.0
    )
}

/// Prints a request/response run; `extra` are workload parameters, added to the JSON object and
/// to the first line of the text.
fn print_report(
    name: &str,
    args: &BenchArgs,
    r: &Report,
    format: OutputFormat,
    extra: &[(&str, serde_json::Value)],
) {
    let secs = r.elapsed.as_secs_f64();
    let rate = r.ok as f64 / secs.max(1e-9);
    let ms = |q: f64| r.latency_us.value_at_quantile(q) as f64 / 1000.0;
    let max = r.latency_us.max() as f64 / 1000.0;
    if format == OutputFormat::Json {
        let mut object = json!({
            "op": name, "clients": args.clients, "conns": args.conns, "total": args.total,
        });
        if let serde_json::Value::Object(m) = &mut object {
            m.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
            m.extend([
                ("ok".to_owned(), json!(r.ok)),
                ("errors".to_owned(), json!(r.errors)),
                ("seconds".to_owned(), json!(secs)),
                ("ops_per_sec".to_owned(), json!(rate)),
                ("p50_ms".to_owned(), json!(ms(0.5))),
                ("p90_ms".to_owned(), json!(ms(0.9))),
                ("p99_ms".to_owned(), json!(ms(0.99))),
                ("max_ms".to_owned(), json!(max)),
            ]);
        }
        println!("{object}");
        return;
    }
    let extra_text: String = extra.iter().map(|(k, v)| format!(", {k} {v}")).collect();
    println!(
        "{name}: {} clients over {} connections, {} requests{extra_text}",
        args.clients, args.conns, args.total
    );
    println!("  total      {secs:.3} s");
    println!("  ops/s      {rate:.0}");
    println!("{}", latency_line("latency ms", &r.latency_us));
    if r.errors > 0 {
        println!(
            "  errors     {} (first: {})",
            r.errors,
            r.first_error.as_deref().unwrap_or("")
        );
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Bench {
        #[command(flatten)]
        args: BenchArgs,
    }

    #[test]
    fn bench_flags_do_not_collide() {
        Bench::command().debug_assert();
    }

    #[test]
    fn watch_fanout_and_lease_keepalive_take_their_flags() {
        let parsed = Bench::try_parse_from([
            "bench",
            "--conns",
            "3",
            "watch-fanout",
            "--watchers",
            "10000",
            "--streams",
            "10",
            "--puts",
            "50",
            "--watch-key",
            "k",
        ]);
        assert!(
            matches!(&parsed, Ok(b) if b.args.conns == 3
                && matches!(b.args.command, BenchCommand::WatchFanout(_))),
            "{parsed:?}"
        );
        let parsed = Bench::try_parse_from([
            "bench",
            "lease-keepalive",
            "--leases",
            "8",
            "--clients",
            "64",
        ]);
        assert!(
            matches!(&parsed, Ok(b) if b.args.clients == 64
                && matches!(b.args.command, BenchCommand::LeaseKeepalive(_))),
            "{parsed:?}"
        );
    }
}

//! The member's Prometheus metrics, named as etcd names them where the concept is the same so
//! that existing dashboards and alerts work unchanged.
//!
//! One registry per process (a process runs one member). Hot paths only touch atomics: label
//! sets are `&'static str`, and values that are state rather than events (leader, sizes,
//! certificate expiry) are set when the endpoint is scraped or when they change.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A gRPC method, as go-grpc-prometheus labels it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    /// `unary`, `client_stream`, `server_stream` or `bidi_stream`.
    pub grpc_type: &'static str,
    /// The fully qualified service, e.g. `etcdserverpb.KV`.
    pub grpc_service: &'static str,
    /// The method, e.g. `Range`.
    pub grpc_method: &'static str,
}

/// A finished gRPC call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcHandledLabels {
    /// See [`GrpcLabels`].
    pub grpc_type: &'static str,
    /// See [`GrpcLabels`].
    pub grpc_service: &'static str,
    /// See [`GrpcLabels`].
    pub grpc_method: &'static str,
    /// The status code's name, e.g. `OK`, `PermissionDenied`.
    pub grpc_code: &'static str,
}

/// A certificate (or CRL) the member holds.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    /// `client-server` (served on the client port), `peer`, `ca` or `crl`.
    pub kind: String,
    /// Its common name (for a CRL: its issuer's).
    pub name: String,
}

/// A refused TLS handshake.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    /// `client` or `peer`.
    pub listener: &'static str,
    /// A short, fixed reason (see `tls::acceptor`).
    pub reason: &'static str,
}

/// A labelled constant (`etcd_server_version{server_version="3.5.0"} 1`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerVersionLabels {
    /// The version.
    pub server_version: &'static str,
}

/// A labelled constant (`etcd_cluster_version{cluster_version="3.5"} 1`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterVersionLabels {
    /// The version.
    pub cluster_version: &'static str,
}

/// A labelled constant (`etcd_server_id{server_id="8e9e05c52164694d"} 1`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerIdLabels {
    /// The member ID in hex.
    pub server_id: String,
}

/// Every metric the member exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// 1 while a leader is known.
    pub has_leader: Gauge,
    /// 1 while this member leads.
    pub is_leader: Gauge,
    /// 1 while this member is a learner.
    pub is_learner: Gauge,
    /// Leader changes this member has seen.
    pub leader_changes: Counter,
    /// The committed raft index (a gauge in etcd despite its name).
    pub proposals_committed: Gauge,
    /// The applied raft index.
    pub proposals_applied: Gauge,
    /// Proposals waiting for their commit.
    pub proposals_pending: Gauge,
    /// Proposals that failed.
    pub proposals_failed: Counter,
    /// The member's ID.
    pub server_id: Family<ServerIdLabels, Gauge>,
    /// The server version.
    pub server_version: Family<ServerVersionLabels, Gauge>,
    /// The cluster version.
    pub cluster_version: Family<ClusterVersionLabels, Gauge>,
    /// The backend quota.
    pub quota_backend_bytes: Gauge,
    /// Raft log syncs (one per group commit).
    pub wal_fsync_seconds: Histogram,
    /// State machine batch writes (one per applied batch).
    pub backend_commit_seconds: Histogram,
    /// The database's size on disk.
    pub db_total_size: Gauge,
    /// The live data's size.
    pub db_in_use_size: Gauge,
    /// The current MVCC revision.
    pub current_revision: Gauge,
    /// The compacted MVCC revision.
    pub compact_revision: Gauge,
    /// Puts applied.
    pub mvcc_put: Counter,
    /// Deletes applied.
    pub mvcc_delete: Counter,
    /// Ranges served.
    pub mvcc_range: Counter,
    /// Transactions applied.
    pub mvcc_txn: Counter,
    /// Open watch streams.
    pub watch_streams: Gauge,
    /// Watchers on those streams.
    pub watchers: Gauge,
    /// Leases granted and not yet revoked or expired.
    pub leases: Gauge,
    /// gRPC calls started.
    pub grpc_started: Family<GrpcLabels, Counter>,
    /// gRPC calls finished, by status code.
    pub grpc_handled: Family<GrpcHandledLabels, Counter>,
    /// Refused TLS handshakes.
    pub handshake_refused: Family<HandshakeLabels, Counter>,
    /// When each certificate the member holds expires (Unix seconds).
    pub certificate_expiry: Family<CertificateLabels, Gauge>,
    /// Resident memory.
    pub process_resident_memory: Gauge,
    /// Virtual memory.
    pub process_virtual_memory: Gauge,
    /// Open file descriptors.
    pub process_open_fds: Gauge,
    /// The file descriptor limit.
    pub process_max_fds: Gauge,
    /// CPU time used, in seconds.
    pub process_cpu_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// When the process started (Unix seconds).
    pub process_start_time: Gauge,
}

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// etcd's disk latency buckets: 1 ms doubling to ~8 s.
fn disk_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 14)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let metrics = Metrics {
            has_leader: Gauge::default(),
            is_leader: Gauge::default(),
            is_learner: Gauge::default(),
            leader_changes: Counter::default(),
            proposals_committed: Gauge::default(),
            proposals_applied: Gauge::default(),
            proposals_pending: Gauge::default(),
            proposals_failed: Counter::default(),
            server_id: Family::default(),
            server_version: Family::default(),
            cluster_version: Family::default(),
            quota_backend_bytes: Gauge::default(),
            wal_fsync_seconds: Histogram::new(disk_buckets()),
            backend_commit_seconds: Histogram::new(disk_buckets()),
            db_total_size: Gauge::default(),
            db_in_use_size: Gauge::default(),
            current_revision: Gauge::default(),
            compact_revision: Gauge::default(),
            mvcc_put: Counter::default(),
            mvcc_delete: Counter::default(),
            mvcc_range: Counter::default(),
            mvcc_txn: Counter::default(),
            watch_streams: Gauge::default(),
            watchers: Gauge::default(),
            leases: Gauge::default(),
            grpc_started: Family::default(),
            grpc_handled: Family::default(),
            handshake_refused: Family::default(),
            certificate_expiry: Family::default(),
            process_resident_memory: Gauge::default(),
            process_virtual_memory: Gauge::default(),
            process_open_fds: Gauge::default(),
            process_max_fds: Gauge::default(),
            process_cpu_seconds: Gauge::default(),
            process_start_time: Gauge::default(),
            registry: Registry::default(),
        };
        // Counters are registered without their `_total` suffix: the encoder adds it.
        let m = &metrics;
        let r = &mut registry;
        r.register(
            "etcd_server_has_leader",
            "Whether or not a leader exists. 1 is existence, 0 is not",
            m.has_leader.clone(),
        );
        r.register(
            "etcd_server_is_leader",
            "Whether or not this member is a leader. 1 if is, 0 otherwise",
            m.is_leader.clone(),
        );
        r.register(
            "etcd_server_is_learner",
            "Whether or not this member is a learner. 1 if is, 0 otherwise",
            m.is_learner.clone(),
        );
        r.register(
            "etcd_server_leader_changes_seen",
            "The number of leader changes seen",
            m.leader_changes.clone(),
        );
        r.register(
            "etcd_server_proposals_committed_total",
            "The total number of consensus proposals committed",
            m.proposals_committed.clone(),
        );
        r.register(
            "etcd_server_proposals_applied_total",
            "The total number of consensus proposals applied",
            m.proposals_applied.clone(),
        );
        r.register(
            "etcd_server_proposals_pending",
            "The current number of pending proposals to commit",
            m.proposals_pending.clone(),
        );
        r.register(
            "etcd_server_proposals_failed",
            "The total number of failed proposals seen",
            m.proposals_failed.clone(),
        );
        r.register(
            "etcd_server_id",
            "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID",
            m.server_id.clone(),
        );
        r.register(
            "etcd_server_version",
            "Which version is running. 1 for 'server_version' label with current version",
            m.server_version.clone(),
        );
        r.register(
            "etcd_cluster_version",
            "Which version is running. 1 for 'cluster_version' label with current cluster version",
            m.cluster_version.clone(),
        );
        r.register(
            "etcd_server_quota_backend_bytes",
            "Current backend storage quota size in bytes",
            m.quota_backend_bytes.clone(),
        );
        r.register(
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by the raft log",
            m.wal_fsync_seconds.clone(),
        );
        r.register(
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by the state machine",
            m.backend_commit_seconds.clone(),
        );
        r.register(
            "etcd_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes",
            m.db_total_size.clone(),
        );
        r.register(
            "etcd_mvcc_db_total_size_in_use_in_bytes",
            "Total size of the underlying database logically in use in bytes",
            m.db_in_use_size.clone(),
        );
        r.register(
            "etcd_debugging_mvcc_current_revision",
            "The current revision of store",
            m.current_revision.clone(),
        );
        r.register(
            "etcd_debugging_mvcc_compact_revision",
            "The revision of the last compaction in store",
            m.compact_revision.clone(),
        );
        r.register(
            "etcd_mvcc_put",
            "Total number of puts seen by this member",
            m.mvcc_put.clone(),
        );
        r.register(
            "etcd_mvcc_delete",
            "Total number of deletes seen by this member",
            m.mvcc_delete.clone(),
        );
        r.register(
            "etcd_mvcc_range",
            "Total number of ranges seen by this member",
            m.mvcc_range.clone(),
        );
        r.register(
            "etcd_mvcc_txn",
            "Total number of txns seen by this member",
            m.mvcc_txn.clone(),
        );
        r.register(
            "etcd_debugging_mvcc_watch_stream_total",
            "Total number of watch streams",
            m.watch_streams.clone(),
        );
        r.register(
            "etcd_debugging_mvcc_watcher_total",
            "Total number of watchers",
            m.watchers.clone(),
        );
        r.register(
            "etcd_debugging_lease_total",
            "The number of current leases",
            m.leases.clone(),
        );
        r.register(
            "grpc_server_started",
            "Total number of RPCs started on the server",
            m.grpc_started.clone(),
        );
        r.register(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure",
            m.grpc_handled.clone(),
        );
        r.register(
            "rampart_tls_handshake_refused",
            "TLS handshakes refused, by listener and reason",
            m.handshake_refused.clone(),
        );
        r.register(
            "rampart_certificate_expiry_timestamp_seconds",
            "When each certificate (or CRL's next update) the member holds expires, in Unix seconds",
            m.certificate_expiry.clone(),
        );
        r.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            m.process_resident_memory.clone(),
        );
        r.register(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            m.process_virtual_memory.clone(),
        );
        r.register(
            "process_open_fds",
            "Number of open file descriptors",
            m.process_open_fds.clone(),
        );
        r.register(
            "process_max_fds",
            "Maximum number of open file descriptors",
            m.process_max_fds.clone(),
        );
        r.register(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds",
            m.process_cpu_seconds.clone(),
        );
        r.register(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            m.process_start_time.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The metrics in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        self.refresh_process();
        let mut text = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Records a refused handshake.
    pub fn handshake_refused(&self, listener: &'static str, reason: &'static str) {
        self.handshake_refused
            .get_or_create(&HandshakeLabels { listener, reason })
            .inc();
    }

    /// Replaces every certificate expiry gauge with `certificates` (kind, name, not-after):
    /// a rotated CA must not linger as a stale series.
    pub fn set_certificate_expiry(&self, certificates: &[(&str, String, i64)]) {
        self.certificate_expiry.clear();
        for (kind, name, not_after) in certificates {
            self.certificate_expiry
                .get_or_create(&CertificateLabels {
                    kind: (*kind).to_owned(),
                    name: name.clone(),
                })
                .set(*not_after);
        }
    }

    /// Reads the process's own figures from /proc (Linux).
    fn refresh_process(&self) {
        if let Some(p) = process::read() {
            self.process_resident_memory.set(p.resident_bytes);
            self.process_virtual_memory.set(p.virtual_bytes);
            self.process_cpu_seconds.set(p.cpu_seconds);
            self.process_start_time.set(p.start_time);
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.process_open_fds.set(dir.count() as i64);
        }
        if let Some(max) = process::max_fds() {
            self.process_max_fds.set(max);
        }
    }
}

/// The process figures Prometheus clients conventionally export.
mod process {
    pub struct Figures {
        pub resident_bytes: i64,
        pub virtual_bytes: i64,
        pub cpu_seconds: f64,
        pub start_time: i64,
    }

    /// Clock ticks per second and page size: fixed on Linux for the architectures we build.
    const TICKS_PER_SECOND: f64 = 100.0;
    const PAGE_SIZE: i64 = 4096;

    pub fn read() -> Option<Figures> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        // Field numbers from proc(5), minus the two before the ')'.
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<i64>().ok());
        let ticks = (field(14)? + field(15)?) as f64;
        let start_ticks = field(22)?;
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse::<i64>()
            .ok()?;
        Some(Figures {
            resident_bytes: field(24)? * PAGE_SIZE,
            virtual_bytes: field(23)?,
            cpu_seconds: ticks / TICKS_PER_SECOND,
            start_time: boot + (start_ticks as f64 / TICKS_PER_SECOND) as i64,
        })
    }

    pub fn max_fds() -> Option<i64> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_etcds_names_and_process_figures() {
        let m = get();
        m.has_leader.set(1);
        m.leader_changes.inc();
        m.wal_fsync_seconds.observe(0.0004);
        m.handshake_refused("client", "unknown_ca");
        m.set_certificate_expiry(&[("ca", "old".into(), 1), ("ca", "new".into(), 2)]);
        m.set_certificate_expiry(&[("ca", "new".into(), 2)]);
        let text = m.encode();
        for line in [
            "etcd_server_has_leader 1",
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"}",
            "rampart_tls_handshake_refused_total{listener=\"client\",reason=\"unknown_ca\"}",
            "rampart_certificate_expiry_timestamp_seconds{kind=\"ca\",name=\"new\"} 2",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(text.contains("etcd_server_leader_changes_seen_total "));
        assert!(
            !text.contains("name=\"old\""),
            "a retired CA lingers:\n{text}"
        );
        let resident = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .and_then(|v| v.parse::<i64>().ok())
            .expect("resident memory exported");
        assert!(resident > 1 << 20, "resident memory {resident}");
    }
}

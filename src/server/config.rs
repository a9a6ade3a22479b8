//! A member's configuration: flags with etcd's names, a TOML file, `RAMPART_*` environment
//! variables — one precedence rule: defaults < file < environment < flags.
//!
//! Everything is parsed, then validated once into a [`MemberConfig`]; errors name the key and
//! the fix. `http://` is refused with the `https://` form to use: rampart has no plaintext.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;

use super::ids;
use crate::pki::{Kind, PkiLayout, validate_name};

/// etcd's default request size limit: 1.5 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 1536 * 1024;
/// etcd's default number of operations in one transaction.
pub const DEFAULT_MAX_TXN_OPS: u32 = 128;
/// Applied entries between snapshots (etcd's --snapshot-count default).
pub const DEFAULT_SNAPSHOT_COUNT: u64 = 100_000;
/// Entries kept after a snapshot (etcd's default catch-up entries).
pub const DEFAULT_SNAPSHOT_CATCHUP_ENTRIES: u64 = 5_000;
/// etcd's default backend quota: 2 GiB.
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// etcd's default initial cluster token.
pub const DEFAULT_TOKEN: &str = "etcd-cluster";
/// Default of --max-concurrent-streams (per client connection).
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 1_000;
/// Default of --max-connections (per client listener).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 4_096;
/// Default of --max-watchers-per-stream.
pub const DEFAULT_MAX_WATCHERS_PER_STREAM: u32 = 100_000;

/// A configuration problem, naming the setting and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value is invalid.
    #[error("{key}: {reason}")]
    Invalid {
        /// The setting (flag name without dashes, as in the TOML file).
        key: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The config file cannot be read or parsed.
    #[error("config file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// `rampart serve` flags. Every flag can also be set as `RAMPART_<FLAG>` (e.g.
/// `RAMPART_LISTEN_CLIENT_URLS`) or as `<flag>` in the `--config-file` TOML.
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServeArgs {
    /// A TOML file with any of these settings (keys as the flag names, e.g. `listen-client-urls`).
    #[arg(long, env = "RAMPART_CONFIG_FILE")]
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
    /// The member's name (its certificate's name in the PKI).
    #[arg(long, env = "RAMPART_NAME")]
    pub name: Option<String>,
    /// Where the member keeps its data. Default: NAME.rampart
    #[arg(long, env = "RAMPART_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// URLs to serve clients on (https only). Default: https://127.0.0.1:2379
    #[arg(long, env = "RAMPART_LISTEN_CLIENT_URLS")]
    pub listen_client_urls: Option<String>,
    /// Extra URLs serving only /metrics and the health endpoints (https only, mutual TLS with
    /// any certificate of the cluster CA), e.g. for a Prometheus on another network.
    #[arg(long, env = "RAMPART_LISTEN_METRICS_URLS")]
    pub listen_metrics_urls: Option<String>,
    /// Client URLs to advertise to the cluster. Default: the listen URLs.
    #[arg(long, env = "RAMPART_ADVERTISE_CLIENT_URLS")]
    pub advertise_client_urls: Option<String>,
    /// URLs to serve peers on (https only). Default: https://127.0.0.1:2380
    #[arg(long, env = "RAMPART_LISTEN_PEER_URLS")]
    pub listen_peer_urls: Option<String>,
    /// Peer URLs to advertise to the cluster. Default: the listen peer URLs.
    #[arg(long, env = "RAMPART_INITIAL_ADVERTISE_PEER_URLS")]
    pub initial_advertise_peer_urls: Option<String>,
    /// The initial cluster: NAME=https://HOST:PORT,... Default: this member alone.
    #[arg(long, env = "RAMPART_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// `new` to form a cluster, `existing` to join one.
    #[arg(long, env = "RAMPART_INITIAL_CLUSTER_STATE")]
    pub initial_cluster_state: Option<String>,
    /// A token that makes cluster and member IDs unique per cluster. Default: etcd-cluster
    #[arg(long, env = "RAMPART_INITIAL_CLUSTER_TOKEN")]
    pub initial_cluster_token: Option<String>,
    /// A `rampart pki` directory: supplies ca.crt, crl.pem and members/NAME.crt|key.
    #[arg(long, env = "RAMPART_PKI_DIR")]
    pub pki_dir: Option<PathBuf>,
    /// The client port's certificate.
    #[arg(long, env = "RAMPART_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    /// The client port's private key (mode 0600).
    #[arg(long, env = "RAMPART_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// The CA that client certificates must chain to.
    #[arg(long, env = "RAMPART_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<PathBuf>,
    /// The CRL checked on the client port.
    #[arg(long, env = "RAMPART_CLIENT_CRL_FILE")]
    pub client_crl_file: Option<PathBuf>,
    /// The peer port's certificate. Default: the client port's.
    #[arg(long, env = "RAMPART_PEER_CERT_FILE")]
    pub peer_cert_file: Option<PathBuf>,
    /// The peer port's private key. Default: the client port's.
    #[arg(long, env = "RAMPART_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,
    /// The CA that peer certificates must chain to. Default: the client port's.
    #[arg(long, env = "RAMPART_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// The CRL checked on the peer port. Default: the client port's.
    #[arg(long, env = "RAMPART_PEER_CRL_FILE")]
    pub peer_crl_file: Option<PathBuf>,
    /// Raise the NOSPACE alarm and refuse writes beyond this database size. Default: 2 GiB
    #[arg(long, env = "RAMPART_QUOTA_BACKEND_BYTES")]
    pub quota_backend_bytes: Option<u64>,
    /// Largest request accepted. Default: 1.5 MiB
    #[arg(long, env = "RAMPART_MAX_REQUEST_BYTES")]
    pub max_request_bytes: Option<u64>,
    /// Most operations in one transaction. Default: 128
    #[arg(long, env = "RAMPART_MAX_TXN_OPS")]
    pub max_txn_ops: Option<u32>,
    /// Applied entries between snapshots; older log entries are then purged. Default: 100000
    #[arg(long, env = "RAMPART_SNAPSHOT_COUNT")]
    pub snapshot_count: Option<u64>,
    /// Entries kept after a snapshot so that slow members catch up from the log, not a
    /// snapshot. Default: 5000
    #[arg(long, env = "RAMPART_EXPERIMENTAL_SNAPSHOT_CATCHUP_ENTRIES")]
    pub experimental_snapshot_catchup_entries: Option<u64>,
    /// How often watchers that asked for progress notices get one (e.g. 10m, 30s, 500ms).
    /// Default: 10m
    #[arg(long, env = "RAMPART_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL")]
    pub experimental_watch_progress_notify_interval: Option<String>,
    /// Most requests in flight on one client connection (HTTP/2 streams). Default: 1000
    #[arg(long, env = "RAMPART_MAX_CONCURRENT_STREAMS")]
    pub max_concurrent_streams: Option<u32>,
    /// Most open client connections per client listener; more are closed at once. Default: 4096
    #[arg(long, env = "RAMPART_MAX_CONNECTIONS")]
    pub max_connections: Option<u32>,
    /// Most watchers on one watch stream. Default: 100000
    #[arg(long, env = "RAMPART_MAX_WATCHERS_PER_STREAM")]
    pub max_watchers_per_stream: Option<u32>,
}

impl ServeArgs {
    /// Fills every setting not given by flag or environment from `file` (flags and environment
    /// win over the file).
    fn or_file(self, file: ServeArgs) -> ServeArgs {
        macro_rules! pick {
            ($($field:ident),*) => { ServeArgs { config_file: self.config_file, $($field: self.$field.or(file.$field)),* } };
        }
        pick!(
            name,
            data_dir,
            listen_client_urls,
            listen_metrics_urls,
            advertise_client_urls,
            listen_peer_urls,
            initial_advertise_peer_urls,
            initial_cluster,
            initial_cluster_state,
            initial_cluster_token,
            pki_dir,
            cert_file,
            key_file,
            trusted_ca_file,
            client_crl_file,
            peer_cert_file,
            peer_key_file,
            peer_trusted_ca_file,
            peer_crl_file,
            quota_backend_bytes,
            max_request_bytes,
            max_txn_ops,
            snapshot_count,
            experimental_snapshot_catchup_entries,
            experimental_watch_progress_notify_interval,
            max_concurrent_streams,
            max_connections,
            max_watchers_per_stream
        )
    }
}

/// The initial cluster as `rampart serve` and `rampart snapshot restore` read it from their
/// flags, with the IDs derived from it: the same flags give the same IDs in both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialCluster {
    /// Initial members: name -> peer URLs (normalised).
    pub members: BTreeMap<String, Vec<String>>,
    /// This member's advertised peer URLs (normalised).
    pub advertise_peer_urls: Vec<String>,
    /// The cluster token.
    pub token: String,
    /// This member's ID.
    pub member_id: u64,
    /// The cluster's ID.
    pub cluster_id: u64,
}

impl InitialCluster {
    /// Reads `--initial-cluster` (`None`: this member alone), `--initial-advertise-peer-urls`
    /// and `--initial-cluster-token` (`None`: etcd's default) for member `name`, and checks
    /// that the initial cluster lists `name` at exactly its advertised peer URLs.
    pub fn resolve(
        name: &str,
        initial_cluster: Option<&str>,
        advertise_peer_urls: &str,
        token: Option<&str>,
    ) -> Result<InitialCluster, ConfigError> {
        let advertise_peer_urls = parse_urls("initial-advertise-peer-urls", advertise_peer_urls)?;
        let members = match initial_cluster {
            Some(text) => parse_initial_cluster(text)?,
            None => BTreeMap::from([(name.to_owned(), advertise_peer_urls.clone())]),
        };
        match members.get(name) {
            None => {
                return Err(invalid(
                    "initial-cluster",
                    format!(
                        "does not name this member {name:?}; add {name}={}",
                        advertise_peer_urls.join(",")
                    ),
                ));
            }
            Some(urls) => {
                let mut mine = urls.clone();
                let mut advertised = advertise_peer_urls.clone();
                mine.sort();
                advertised.sort();
                if mine != advertised {
                    return Err(invalid(
                        "initial-cluster",
                        format!(
                            "lists {name} at {} but --initial-advertise-peer-urls is {}; make them the same",
                            urls.join(","),
                            advertise_peer_urls.join(",")
                        ),
                    ));
                }
            }
        }
        let token = token.unwrap_or(DEFAULT_TOKEN).to_owned();
        if token.is_empty() {
            return Err(invalid("initial-cluster-token", "must not be empty"));
        }
        let member_ids: Vec<u64> = members
            .values()
            .map(|urls| ids::member_id(urls, &token))
            .collect();
        Ok(InitialCluster {
            member_id: ids::member_id(&advertise_peer_urls, &token),
            cluster_id: ids::cluster_id(&member_ids),
            members,
            advertise_peer_urls,
            token,
        })
    }
}

/// Whether this member forms a new cluster or joins an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    /// Form a new cluster with `initial_cluster`.
    New,
    /// Join a running cluster (after `member add`).
    Existing,
}

/// Certificate, key, CA and CRL of one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// Certificate (PEM).
    pub cert: PathBuf,
    /// Private key (PEM, mode 0600).
    pub key: PathBuf,
    /// Trusted CA bundle (PEM).
    pub ca: PathBuf,
    /// Revocation list (PEM); `None` only when neither flag nor PKI dir names one.
    pub crl: Option<PathBuf>,
}

/// A validated member configuration.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    /// The member name.
    pub name: String,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Client listen addresses.
    pub listen_client: Vec<SocketAddr>,
    /// Metrics and health listen addresses (besides the client port, which serves them too).
    pub listen_metrics: Vec<SocketAddr>,
    /// Advertised client URLs.
    pub advertise_client_urls: Vec<String>,
    /// Peer listen addresses.
    pub listen_peer: Vec<SocketAddr>,
    /// Advertised peer URLs.
    pub advertise_peer_urls: Vec<String>,
    /// Initial members: name -> peer URLs.
    pub initial_cluster: BTreeMap<String, Vec<String>>,
    /// New or existing.
    pub initial_cluster_state: ClusterState,
    /// The cluster token.
    pub initial_cluster_token: String,
    /// This member's ID.
    pub member_id: u64,
    /// The cluster's ID (from the initial cluster).
    pub cluster_id: u64,
    /// Client port TLS.
    pub client_tls: TlsPaths,
    /// Peer port TLS.
    pub peer_tls: TlsPaths,
    /// Backend quota in bytes.
    pub quota_backend_bytes: u64,
    /// Request size limit in bytes.
    pub max_request_bytes: u64,
    /// Transaction operation limit.
    pub max_txn_ops: u32,
    /// Applied entries between snapshots.
    pub snapshot_count: u64,
    /// Entries kept after a snapshot.
    pub snapshot_catchup_entries: u64,
    /// Interval of watch progress notices.
    pub watch_progress_notify_interval: std::time::Duration,
    /// Requests in flight per client connection.
    pub max_concurrent_streams: u32,
    /// Open client connections per listener.
    pub max_connections: u32,
    /// Watchers per watch stream.
    pub max_watchers_per_stream: u32,
}

impl MemberConfig {
    /// Merges flags/environment (already in `args` by clap) with the config file, applies
    /// defaults and validates.
    pub fn resolve(args: ServeArgs) -> Result<MemberConfig, ConfigError> {
        let merged = match &args.config_file {
            Some(path) => {
                let file = read_file(path)?;
                args.or_file(file)
            }
            None => args,
        };
        Self::validate(merged)
    }

    fn validate(a: ServeArgs) -> Result<MemberConfig, ConfigError> {
        let name = a.name.ok_or_else(|| {
            invalid(
                "name",
                "missing: set --name to this member's name in the PKI (e.g. rampart-0)",
            )
        })?;
        validate_name("member", &name).map_err(|e| invalid("name", e.to_string()))?;
        let data_dir = a
            .data_dir
            .unwrap_or_else(|| PathBuf::from(format!("{name}.rampart")));

        let listen_client_urls = a
            .listen_client_urls
            .unwrap_or_else(|| "https://127.0.0.1:2379".into());
        let listen_client = parse_listen("listen-client-urls", &listen_client_urls)?;
        let listen_metrics = parse_listen(
            "listen-metrics-urls",
            a.listen_metrics_urls.as_deref().unwrap_or(""),
        )?;
        let advertise_client_urls = parse_urls(
            "advertise-client-urls",
            a.advertise_client_urls
                .as_deref()
                .unwrap_or(&listen_client_urls),
        )?;
        let listen_peer_urls = a
            .listen_peer_urls
            .unwrap_or_else(|| "https://127.0.0.1:2380".into());
        let listen_peer = parse_listen("listen-peer-urls", &listen_peer_urls)?;
        let initial = InitialCluster::resolve(
            &name,
            a.initial_cluster.as_deref(),
            a.initial_advertise_peer_urls
                .as_deref()
                .unwrap_or(&listen_peer_urls),
            a.initial_cluster_token.as_deref(),
        )?;
        let initial_cluster_state = match a.initial_cluster_state.as_deref().unwrap_or("new") {
            "new" => ClusterState::New,
            "existing" => ClusterState::Existing,
            other => {
                return Err(invalid(
                    "initial-cluster-state",
                    format!("{other:?} is neither \"new\" nor \"existing\""),
                ));
            }
        };

        let from_pki = a.pki_dir.as_ref().map(|dir| {
            let layout = PkiLayout::new(dir);
            TlsPaths {
                cert: layout.cert(Kind::Member, &name),
                key: layout.key(Kind::Member, &name),
                ca: layout.ca_cert(),
                crl: Some(layout.crl()),
            }
        });
        let client_tls = tls_paths(
            ("cert-file", a.cert_file),
            ("key-file", a.key_file),
            ("trusted-ca-file", a.trusted_ca_file),
            a.client_crl_file,
            from_pki.as_ref(),
        )?;
        let peer_tls = tls_paths(
            (
                "peer-cert-file",
                a.peer_cert_file.or_else(|| Some(client_tls.cert.clone())),
            ),
            (
                "peer-key-file",
                a.peer_key_file.or_else(|| Some(client_tls.key.clone())),
            ),
            (
                "peer-trusted-ca-file",
                a.peer_trusted_ca_file
                    .or_else(|| Some(client_tls.ca.clone())),
            ),
            a.peer_crl_file.or_else(|| client_tls.crl.clone()),
            None,
        )?;

        let max_request_bytes = a.max_request_bytes.unwrap_or(DEFAULT_MAX_REQUEST_BYTES);
        if max_request_bytes == 0 {
            return Err(invalid("max-request-bytes", "must be positive"));
        }
        let max_txn_ops = a.max_txn_ops.unwrap_or(DEFAULT_MAX_TXN_OPS);
        if max_txn_ops == 0 {
            return Err(invalid("max-txn-ops", "must be positive"));
        }
        let snapshot_count = a.snapshot_count.unwrap_or(DEFAULT_SNAPSHOT_COUNT);
        if snapshot_count == 0 {
            return Err(invalid("snapshot-count", "must be positive"));
        }
        let snapshot_catchup_entries = a
            .experimental_snapshot_catchup_entries
            .unwrap_or(DEFAULT_SNAPSHOT_CATCHUP_ENTRIES);
        let watch_progress_notify_interval = match &a.experimental_watch_progress_notify_interval {
            None => crate::api::watch::DEFAULT_PROGRESS_INTERVAL,
            Some(text) => match humantime::parse_duration(text) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    return Err(invalid(
                        "experimental-watch-progress-notify-interval",
                        "must be positive",
                    ));
                }
                Err(e) => {
                    return Err(invalid(
                        "experimental-watch-progress-notify-interval",
                        format!("{text:?} is not a duration ({e}); write e.g. 10m, 30s or 500ms"),
                    ));
                }
            },
        };
        Ok(MemberConfig {
            name,
            data_dir,
            listen_client,
            listen_metrics,
            advertise_client_urls,
            listen_peer,
            advertise_peer_urls: initial.advertise_peer_urls,
            initial_cluster: initial.members,
            initial_cluster_state,
            initial_cluster_token: initial.token,
            member_id: initial.member_id,
            cluster_id: initial.cluster_id,
            client_tls,
            peer_tls,
            quota_backend_bytes: a.quota_backend_bytes.unwrap_or(DEFAULT_QUOTA_BACKEND_BYTES),
            max_request_bytes,
            max_txn_ops,
            snapshot_count,
            snapshot_catchup_entries,
            watch_progress_notify_interval,
            max_concurrent_streams: positive(
                "max-concurrent-streams",
                a.max_concurrent_streams,
                DEFAULT_MAX_CONCURRENT_STREAMS,
            )?,
            max_connections: positive(
                "max-connections",
                a.max_connections,
                DEFAULT_MAX_CONNECTIONS,
            )?,
            max_watchers_per_stream: positive(
                "max-watchers-per-stream",
                a.max_watchers_per_stream,
                DEFAULT_MAX_WATCHERS_PER_STREAM,
            )?,
        })
    }
}

/// A limit that must be at least 1.
fn positive(flag: &'static str, value: Option<u32>, default: u32) -> Result<u32, ConfigError> {
    match value.unwrap_or(default) {
        0 => Err(invalid(flag, "must be positive")),
        n => Ok(n),
    }
}

fn read_file(path: &Path) -> Result<ServeArgs, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::File {
        path: path.to_owned(),
        reason: e.to_string().trim().to_owned(),
    })
}

type Named = (&'static str, Option<PathBuf>);

fn tls_paths(
    cert: Named,
    key: Named,
    ca: Named,
    crl: Option<PathBuf>,
    pki: Option<&TlsPaths>,
) -> Result<TlsPaths, ConfigError> {
    let pick = |(key_name, value): Named, from_pki: Option<&PathBuf>| {
        value.or_else(|| from_pki.cloned()).ok_or_else(|| {
            invalid(
                key_name,
                "missing: pass --pki-dir DIR (made by `rampart pki init`) or set --cert-file, \
                 --key-file and --trusted-ca-file; rampart does not run without TLS",
            )
        })
    };
    Ok(TlsPaths {
        cert: pick(cert, pki.map(|p| &p.cert))?,
        key: pick(key, pki.map(|p| &p.key))?,
        ca: pick(ca, pki.map(|p| &p.ca))?,
        crl: crl.or_else(|| pki.and_then(|p| p.crl.clone())),
    })
}

/// One `https://HOST:PORT` URL, normalised (no trailing slash).
pub fn parse_url(key: &'static str, text: &str) -> Result<(String, String, u16), ConfigError> {
    let text = text.trim();
    let rest = if let Some(rest) = text.strip_prefix("https://") {
        rest
    } else if let Some(rest) = text.strip_prefix("http://") {
        return Err(invalid(
            key,
            format!("{text} is plaintext; rampart speaks only TLS: use https://{rest}"),
        ));
    } else {
        return Err(invalid(
            key,
            format!("{text:?} is not a URL; write it as https://HOST:PORT"),
        ));
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| invalid(key, format!("{text}: unclosed '[' in an IPv6 address")))?;
        (host, after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    let port = port
        .ok_or_else(|| {
            invalid(
                key,
                format!("{text} has no port; write it as https://HOST:PORT"),
            )
        })?
        .parse::<u16>()
        .map_err(|_| invalid(key, format!("{text} has an invalid port")))?;
    if host.is_empty() || host.contains('/') {
        return Err(invalid(key, format!("{text} has no valid host")));
    }
    let url = if host.contains(':') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    };
    Ok((url, host.to_owned(), port))
}

fn parse_urls(key: &'static str, text: &str) -> Result<Vec<String>, ConfigError> {
    let urls: Vec<String> = text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|u| parse_url(key, u).map(|(url, _, _)| url))
        .collect::<Result<_, _>>()?;
    if urls.is_empty() {
        return Err(invalid(key, "no URL given"));
    }
    Ok(urls)
}

fn parse_listen(key: &'static str, text: &str) -> Result<Vec<SocketAddr>, ConfigError> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|u| {
            let (url, host, port) = parse_url(key, u)?;
            let ip: IpAddr = if host == "localhost" {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                host.parse().map_err(|_| {
                    invalid(
                        key,
                        format!("{url}: listen URLs take an IP address (or localhost), not a name"),
                    )
                })?
            };
            Ok(SocketAddr::new(ip, port))
        })
        .collect()
}

/// `name=https://h:p,name2=https://h2:p2` (a name may repeat for several URLs, as in etcd).
pub fn parse_initial_cluster(text: &str) -> Result<BTreeMap<String, Vec<String>>, ConfigError> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for part in text.split(',').filter(|s| !s.trim().is_empty()) {
        let (name, url) = part.split_once('=').ok_or_else(|| {
            invalid(
                "initial-cluster",
                format!("{part:?} is not NAME=https://HOST:PORT"),
            )
        })?;
        let name = name.trim();
        validate_name("member", name).map_err(|e| invalid("initial-cluster", e.to_string()))?;
        let (url, _, _) = parse_url("initial-cluster", url)?;
        let urls = out.entry(name.to_owned()).or_default();
        if urls.contains(&url) {
            return Err(invalid(
                "initial-cluster",
                format!("{name}={url} is listed twice"),
            ));
        }
        urls.push(url);
    }
    if out.is_empty() {
        return Err(invalid("initial-cluster", "is empty"));
    }
    let mut seen: BTreeMap<&String, &String> = BTreeMap::new();
    for (name, urls) in &out {
        for url in urls {
            if let Some(other) = seen.insert(url, name) {
                return Err(invalid(
                    "initial-cluster",
                    format!(
                        "{url} is given for both {other} and {name}; each member needs its own peer URL"
                    ),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(name: &str) -> ServeArgs {
        ServeArgs {
            name: Some(name.into()),
            pki_dir: Some("/pki".into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_etcds_on_https_with_the_pki_dir() {
        let c = MemberConfig::validate(args("rampart-0")).unwrap();
        assert_eq!(c.listen_client, vec!["127.0.0.1:2379".parse().unwrap()]);
        assert_eq!(c.advertise_client_urls, vec!["https://127.0.0.1:2379"]);
        assert_eq!(c.advertise_peer_urls, vec!["https://127.0.0.1:2380"]);
        assert_eq!(c.data_dir, PathBuf::from("rampart-0.rampart"));
        assert_eq!(
            c.client_tls.cert,
            PathBuf::from("/pki/members/rampart-0.crt")
        );
        assert_eq!(
            c.client_tls.key,
            PathBuf::from("/pki/members/rampart-0.key")
        );
        assert_eq!(c.client_tls.crl, Some(PathBuf::from("/pki/crl.pem")));
        assert_eq!(c.peer_tls, c.client_tls);
        assert_eq!((c.max_request_bytes, c.max_txn_ops), (1_572_864, 128));
        assert_eq!(c.quota_backend_bytes, 2 << 30);
        assert_eq!(c.initial_cluster_state, ClusterState::New);
        assert_eq!(
            c.member_id,
            ids::member_id(&["https://127.0.0.1:2380".into()], "etcd-cluster")
        );
    }

    #[test]
    fn plaintext_urls_are_refused_with_the_https_form() {
        let mut a = args("rampart-0");
        a.listen_client_urls = Some("http://127.0.0.1:2379".into());
        let err = MemberConfig::validate(a).unwrap_err().to_string();
        assert!(err.starts_with("listen-client-urls:"), "{err}");
        assert!(err.contains("use https://127.0.0.1:2379"), "{err}");

        let mut a = args("rampart-0");
        a.initial_cluster = Some("rampart-0=http://127.0.0.1:2380".into());
        assert!(
            MemberConfig::validate(a)
                .unwrap_err()
                .to_string()
                .contains("use https://")
        );
    }

    #[test]
    fn missing_tls_material_says_how_to_provide_it() {
        let a = ServeArgs {
            name: Some("m".into()),
            ..Default::default()
        };
        let err = MemberConfig::validate(a).unwrap_err().to_string();
        assert!(err.contains("--pki-dir"), "{err}");
    }

    #[test]
    fn initial_cluster_must_name_this_member_consistently() {
        let mut a = args("rampart-1");
        a.initial_cluster = Some("rampart-0=https://127.0.0.1:2380".into());
        assert!(
            MemberConfig::validate(a)
                .unwrap_err()
                .to_string()
                .contains("does not name this member")
        );

        let mut a = args("rampart-0");
        a.initial_cluster = Some("rampart-0=https://127.0.0.1:9999".into());
        assert!(
            MemberConfig::validate(a)
                .unwrap_err()
                .to_string()
                .contains("make them the same")
        );

        assert!(
            parse_initial_cluster("a=https://h:1,b=https://h:1")
                .unwrap_err()
                .to_string()
                .contains("both a and b")
        );
        assert!(parse_initial_cluster("a https://h:1").is_err());
        assert!(parse_initial_cluster("A=https://h:1").is_err());
        let c = parse_initial_cluster("b=https://h2:2,a=https://[::1]:1").unwrap();
        assert_eq!(c["a"], vec!["https://[::1]:1"]);
    }

    #[test]
    fn the_file_fills_what_flags_and_environment_leave_unset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rampart.toml");
        std::fs::write(
            &path,
            "name = \"from-file\"\nmax-txn-ops = 7\nlisten-client-urls = \"https://127.0.0.1:3379\"\npki-dir = \"/p\"\n",
        )
        .unwrap();
        let flags = ServeArgs {
            config_file: Some(path.clone()),
            max_txn_ops: Some(9),
            ..Default::default()
        };
        let c = MemberConfig::resolve(flags).unwrap();
        assert_eq!(c.name, "from-file");
        assert_eq!(c.max_txn_ops, 9, "flags win over the file");
        assert_eq!(c.listen_client, vec!["127.0.0.1:3379".parse().unwrap()]);

        std::fs::write(&path, "nmae = \"typo\"\n").unwrap();
        let err = MemberConfig::resolve(ServeArgs {
            config_file: Some(path),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("unknown field") && err.contains("nmae"),
            "{err}"
        );
    }

    #[test]
    fn listen_urls_need_an_ip() {
        let mut a = args("m");
        a.listen_peer_urls = Some("https://example.com:2380".into());
        assert!(
            MemberConfig::validate(a)
                .unwrap_err()
                .to_string()
                .contains("take an IP address")
        );
        assert!(
            parse_url("k", "https://h")
                .unwrap_err()
                .to_string()
                .contains("no port")
        );
        assert!(
            parse_url("k", "h:1")
                .unwrap_err()
                .to_string()
                .contains("not a URL")
        );
    }
}

//! Connecting to a cluster as a client: endpoints, client certificate, timeouts — flags with
//! etcdctl's names, defaults from `RAMPART_*` then `ETCDCTL_*` environment variables.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use tonic::transport::Channel;

use crate::pki::{Kind, PkiLayout};
use crate::tls::{Material, TlsFiles};

/// How to reach and authenticate to the cluster.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// gRPC endpoints, comma-separated (https only). Default: https://127.0.0.1:2379
    #[arg(
        long,
        id = "conn_endpoints",
        global = true,
        env = "RAMPART_ENDPOINTS",
        value_delimiter = ','
    )]
    pub endpoints: Vec<String>,
    /// The CA bundle that server certificates must chain to.
    #[arg(long, id = "conn_cacert", global = true, env = "RAMPART_CACERT")]
    pub cacert: Option<PathBuf>,
    /// The client certificate.
    #[arg(long, id = "conn_cert", global = true, env = "RAMPART_CERT")]
    pub cert: Option<PathBuf>,
    /// The client certificate's key.
    #[arg(long, id = "conn_key", global = true, env = "RAMPART_KEY")]
    pub key: Option<PathBuf>,
    /// A `rampart pki` directory: ca.crt and clients/USER.crt|key are taken from it.
    #[arg(long, id = "conn_pki_dir", global = true, env = "RAMPART_PKI_DIR")]
    pub pki_dir: Option<PathBuf>,
    /// The client certificate to use from --pki-dir.
    #[arg(
        long,
        id = "conn_user",
        global = true,
        env = "RAMPART_USER",
        default_value = "root"
    )]
    pub user: String,
    /// Dial timeout (e.g. 2s, 500ms).
    #[arg(long, global = true, default_value = "2s", value_parser = parse_duration)]
    pub dial_timeout: Duration,
    /// Timeout of one command (e.g. 5s).
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    pub command_timeout: Duration,
}

/// Parses `500ms`, `2s`, `1m`, `1h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration; write it as 500ms, 2s or 1m");
    let (digits, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| text.split_at(i))
        .unwrap_or((text, "s"));
    let n: f64 = digits.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A lease ID as etcdctl prints it: hex (a `0x` prefix is accepted too). `None` when `text`
/// is not one; callers word the error as the etcdctl command they mirror does.
pub fn parse_lease(text: &str) -> Option<i64> {
    // IDs are printed as 16 hex digits of the unsigned value, so read them back the same way.
    u64::from_str_radix(text.trim_start_matches("0x"), 16)
        .ok()
        .map(|v| v as i64)
}

/// Resolves on Ctrl-C. If the handler cannot be installed it never resolves, so the
/// command runs on as it would have without one.
pub async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// One endpoint, normalised to `https://host:port`.
pub fn normalize_endpoint(text: &str) -> anyhow::Result<String> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix("http://") {
        bail!("{text} is plaintext; rampart speaks only TLS: use https://{rest}");
    }
    let url = if text.starts_with("https://") {
        text.trim_end_matches('/').to_owned()
    } else if text.contains("://") {
        bail!("{text:?} is not an https endpoint; write it as https://HOST:PORT");
    } else {
        format!("https://{}", text.trim_end_matches('/'))
    };
    Ok(url)
}

impl ConnArgs {
    /// The endpoints, normalised; `ETCDCTL_ENDPOINTS` when none were given.
    pub fn endpoint_list(&self) -> anyhow::Result<Vec<String>> {
        let raw: Vec<String> = if self.endpoints.is_empty() {
            match std::env::var("ETCDCTL_ENDPOINTS") {
                Ok(v) if !v.is_empty() => v.split(',').map(str::to_owned).collect(),
                _ => vec!["https://127.0.0.1:2379".to_owned()],
            }
        } else {
            self.endpoints.clone()
        };
        raw.iter()
            .filter(|e| !e.trim().is_empty())
            .map(|e| normalize_endpoint(e))
            .collect()
    }

    /// The client's TLS files: flags, else `--pki-dir`, else `ETCDCTL_CACERT/CERT/KEY`.
    pub fn tls_files(&self) -> anyhow::Result<TlsFiles> {
        let from_pki = self.pki_dir.as_ref().map(|dir| {
            let layout = PkiLayout::new(dir);
            (
                layout.ca_cert(),
                layout.cert(Kind::Client, &self.user),
                layout.key(Kind::Client, &self.user),
            )
        });
        let pick = |flag: &Option<PathBuf>, pki: Option<PathBuf>, env: &str| {
            flag.clone().or(pki).or_else(|| env_path(env))
        };
        let ca = pick(
            &self.cacert,
            from_pki.as_ref().map(|p| p.0.clone()),
            "ETCDCTL_CACERT",
        );
        let cert = pick(
            &self.cert,
            from_pki.as_ref().map(|p| p.1.clone()),
            "ETCDCTL_CERT",
        );
        let key = pick(
            &self.key,
            from_pki.as_ref().map(|p| p.2.clone()),
            "ETCDCTL_KEY",
        );
        match (ca, cert, key) {
            (Some(ca), Some(cert), Some(key)) => Ok(TlsFiles {
                cert,
                key,
                ca,
                crl: None,
            }),
            _ => Err(anyhow!(
                "no client certificate: pass --pki-dir DIR [--user NAME], or --cacert, --cert and --key \
                 (rampart clients always authenticate with a certificate)"
            )),
        }
    }

    /// TLS client configuration from the files.
    pub fn client_config(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let files = self.tls_files()?;
        // A certificate and its key are replaced one file after the other (renewal, CA
        // rotation): a mismatch may be a replacement caught half-way, so look again briefly.
        let mut attempts = 0;
        let material = loop {
            match Material::load(&files) {
                Err(crate::tls::TlsError::KeyMismatch { .. }) if attempts < 5 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        Ok(crate::tls::client_config(&material)?)
    }

    /// A channel to `endpoint` over mutual TLS, within the dial timeout.
    pub async fn connect_one(
        &self,
        endpoint: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> anyhow::Result<Channel> {
        tokio::time::timeout(
            self.dial_timeout,
            crate::tls::connect_channel(endpoint, config),
        )
        .await
        .map_err(|_| {
            anyhow!(
                "{endpoint}: context deadline exceeded (dial timeout {:?})",
                self.dial_timeout
            )
        })?
        .with_context(|| format!("{endpoint}: cannot connect"))
    }

    /// A channel to the first endpoint that answers.
    pub async fn connect(&self) -> anyhow::Result<Channel> {
        let config = self.client_config()?;
        let mut last = None;
        for endpoint in self.endpoint_list()? {
            match self.connect_one(&endpoint, config.clone()).await {
                Ok(channel) => return Ok(channel),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("no endpoints given")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_etcdctls() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("2d").is_err());
    }

    #[test]
    fn lease_ids_are_hex() {
        assert_eq!(parse_lease("694d77aa9e38260f"), Some(0x694d77aa9e38260f));
        assert_eq!(parse_lease("0x10"), Some(16));
        assert_eq!(parse_lease("0"), Some(0));
        assert_eq!(parse_lease("xyz"), None);
        assert_eq!(parse_lease(""), None);
    }

    #[test]
    fn endpoints_must_be_tls() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:2379").unwrap(),
            "https://127.0.0.1:2379"
        );
        assert_eq!(
            normalize_endpoint("https://[::1]:2379/").unwrap(),
            "https://[::1]:2379"
        );
        let err = normalize_endpoint("http://127.0.0.1:2379")
            .unwrap_err()
            .to_string();
        assert!(err.contains("use https://127.0.0.1:2379"), "{err}");
        assert!(normalize_endpoint("unix://x").is_err());
    }
}

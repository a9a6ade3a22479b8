//! `rampart pki ...`: the certificate authority's command line.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};
use serde::Serialize;

use super::output::{OutputFormat, table};
use super::{CliError, exit};
use crate::pki::{
    self, Authority, CertInfo, InitOptions, Kind, LeafSpec, PkiError, PkiLayout, Problem, San,
    Trust,
};

#[derive(Debug, Subcommand)]
pub(crate) enum PkiCommand {
    /// Create a cluster's whole PKI: CA, CRL, one certificate per member, client certificates.
    Init(InitArgs),
    /// Issue a certificate for a new member or client, signed by the existing CA.
    #[command(subcommand)]
    Issue(IssueCommand),
    /// List the certificates of a PKI with their validity and status.
    List(DirArg),
    /// Explain a PEM certificate and, with --dir, whether the cluster's CA accepts it.
    Inspect(InspectArgs),
    /// Revoke a certificate by name or serial: it is added to crl.pem.
    Revoke(RevokeArgs),
    /// Reissue a certificate with a new key and validity, same identity and SANs.
    Renew(RenewArgs),
    /// Export a certificate, its key and the CA as a password-protected PKCS#12 file.
    Bundle(BundleArgs),
    /// Replace the CA with no downtime: start, then reissue, then finish (see SECURITY.md).
    #[command(subcommand)]
    RotateCa(RotateCaCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum RotateCaCommand {
    /// Create the next CA; ca.crt and crl.pem then trust both CAs (distribute them).
    Start {
        #[command(flatten)]
        dir: DirArg,
        /// Lifetime of the new CA (e.g. 3650d).
        #[arg(long, value_parser = parse_days)]
        ca_validity: Option<u32>,
    },
    /// Make the next CA the issuing one and reissue every member and client certificate.
    Reissue(DirArg),
    /// Stop trusting the old CA (refused while a certificate still comes from it).
    Finish(DirArg),
}

#[derive(Debug, Args)]
pub(crate) struct DirArg {
    /// The PKI directory.
    #[arg(long, env = "RAMPART_PKI_DIR")]
    dir: PathBuf,
}

/// Where a leaf certificate is issued and for how long.
#[derive(Debug, Args)]
pub(crate) struct LeafArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Lifetime (e.g. 365d, 2y).
    #[arg(long, value_parser = parse_days)]
    validity: Option<u32>,
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// Directory to create the PKI in (must not hold one already).
    #[arg(long, env = "RAMPART_PKI_DIR")]
    dir: PathBuf,
    /// Cluster name: the trust domain of every identity (spiffe://NAME/...).
    #[arg(long, default_value = "rampart")]
    cluster_name: String,
    /// A member, optionally with its SANs: NAME or NAME=SAN,SAN,... (DNS names or IPs).
    /// Default: rampart-0, rampart-1, rampart-2 on localhost.
    #[arg(long = "member", value_name = "NAME[=SAN,...]")]
    members: Vec<String>,
    /// A client (user) certificate to issue. Default: root.
    #[arg(long = "client", value_name = "NAME")]
    clients: Vec<String>,
    /// Kubernetes: the StatefulSet whose pods are the members.
    #[arg(long, requires_all = ["k8s_service", "k8s_namespace", "replicas"], conflicts_with = "members")]
    k8s_statefulset: Option<String>,
    /// Kubernetes: the headless service in front of the StatefulSet.
    #[arg(long, requires = "k8s_statefulset")]
    k8s_service: Option<String>,
    /// Kubernetes: the namespace.
    #[arg(long, requires = "k8s_statefulset")]
    k8s_namespace: Option<String>,
    /// Kubernetes: the number of replicas (members).
    #[arg(long, requires = "k8s_statefulset")]
    replicas: Option<u32>,
    /// Kubernetes: the cluster DNS domain.
    #[arg(long, requires = "k8s_statefulset")]
    cluster_domain: Option<String>,
    /// Lifetime of member and client certificates (e.g. 365d, 90d, 2y). Default 1 year.
    #[arg(long, value_parser = parse_days)]
    validity: Option<u32>,
    /// Lifetime of the CA certificate. Default 10 years.
    #[arg(long, value_parser = parse_days)]
    ca_validity: Option<u32>,
    /// Move an existing directory aside (DIR.replaced-TIMESTAMP) and create a new CA.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum IssueCommand {
    /// A member certificate (serverAuth + clientAuth, spiffe://CLUSTER/member/NAME).
    Member(IssueMemberArgs),
    /// A client certificate (clientAuth, spiffe://CLUSTER/user/NAME).
    Client(IssueClientArgs),
}

#[derive(Debug, Args)]
pub(crate) struct IssueMemberArgs {
    /// Member name.
    name: String,
    /// A DNS name the member is reached by (repeatable).
    #[arg(long = "dns")]
    dns: Vec<String>,
    /// An IP address the member is reached at (repeatable).
    #[arg(long = "ip")]
    ips: Vec<String>,
    #[command(flatten)]
    leaf: LeafArgs,
}

#[derive(Debug, Args)]
pub(crate) struct IssueClientArgs {
    /// User name (etcd's user; `root` may do everything).
    name: String,
    #[command(flatten)]
    leaf: LeafArgs,
}

#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// A PEM certificate file.
    file: PathBuf,
    /// A PKI directory to verify the certificate against.
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct RevokeArgs {
    /// NAME, member/NAME, client/NAME, or a serial number in hex.
    target: String,
    #[command(flatten)]
    dir: DirArg,
    /// Why: unspecified, key-compromise, ca-compromise, affiliation-changed, superseded,
    /// cessation-of-operation, privilege-withdrawn.
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct RenewArgs {
    /// NAME, member/NAME or client/NAME.
    name: String,
    #[command(flatten)]
    leaf: LeafArgs,
}

#[derive(Debug, Args)]
pub(crate) struct BundleArgs {
    /// NAME, member/NAME or client/NAME.
    name: String,
    #[command(flatten)]
    dir: DirArg,
    /// Where to write the PKCS#12 file (mode 0600).
    #[arg(long)]
    out: PathBuf,
    /// A file whose first line is the bundle's password. Without it a random password is
    /// generated and printed once.
    #[arg(long)]
    password_file: Option<PathBuf>,
}

/// Parses a lifetime: `N` or `Nd` days, `Ny` years (365 days).
fn parse_days(text: &str) -> Result<u32, String> {
    let bad = || format!("{text:?} is not a lifetime; write it as 365d, 90d or 2y");
    let (digits, factor) = if let Some(d) = text.strip_suffix('d') {
        (d, 1)
    } else if let Some(y) = text.strip_suffix('y') {
        (y, 365)
    } else {
        (text, 1)
    };
    let n: u32 = digits.parse().map_err(|_| bad())?;
    let days = n.checked_mul(factor).ok_or_else(bad)?;
    if days == 0 {
        return Err("a lifetime must be at least 1 day".to_owned());
    }
    Ok(days)
}

pub(crate) fn run(cmd: PkiCommand, format: OutputFormat) -> Result<(), CliError> {
    match cmd {
        PkiCommand::Init(args) => init(args, format),
        PkiCommand::Issue(IssueCommand::Member(args)) => {
            let mut sans = Vec::new();
            for d in &args.dns {
                sans.push(San::parse(d)?);
            }
            for ip in &args.ips {
                let san = San::parse(ip)?;
                if !matches!(san, San::Ip(_)) {
                    return Err(
                        anyhow!("--ip {ip:?} is not an IP address; use --dns for names").into(),
                    );
                }
                sans.push(san);
            }
            if sans.is_empty() {
                pki::validate_name("member", &args.name)?;
                sans = pki::default_member_sans(&args.name)?;
            }
            issue(&args.leaf, Kind::Member, args.name, sans, format)
        }
        PkiCommand::Issue(IssueCommand::Client(args)) => {
            issue(&args.leaf, Kind::Client, args.name, vec![], format)
        }
        PkiCommand::List(args) => list(&args.dir, format),
        PkiCommand::Inspect(args) => inspect(&args.file, args.dir.as_deref(), format),
        PkiCommand::Revoke(args) => revoke(args, format),
        PkiCommand::Renew(args) => {
            let authority = Authority::open(&args.leaf.dir.dir)?;
            let info = authority.renew(&args.name, args.leaf.validity)?;
            print_issued("Renewed", &info, authority.layout(), format)
        }
        PkiCommand::Bundle(args) => bundle(args),
        PkiCommand::RotateCa(step) => rotate_ca(step),
    }
}

fn rotate_ca(step: RotateCaCommand) -> Result<(), CliError> {
    use crate::pki::rotation;
    match step {
        RotateCaCommand::Start { dir, ca_validity } => {
            let ca = rotation::start(&dir.dir, ca_validity)?;
            println!(
                "Created the next CA (serial {}, valid until {}).\n\
                 ca.crt and crl.pem now trust both CAs. Copy them to every member and client \
                 (members reload them by themselves), then run `rampart pki rotate-ca reissue`.",
                ca.serial,
                crate::pki::format_time(ca.not_after)
            );
        }
        RotateCaCommand::Reissue(dir) => {
            let issued = rotation::reissue(&dir.dir)?;
            for cert in &issued {
                println!(
                    "Reissued {} (serial {})",
                    cert.identity.as_deref().unwrap_or(&cert.common_name),
                    cert.serial
                );
            }
            println!(
                "The new CA now issues; the old CA key is destroyed. Copy each member's and \
                 client's new certificate and key to it (members reload them by themselves), \
                 then run `rampart pki rotate-ca finish`."
            );
        }
        RotateCaCommand::Finish(dir) => {
            let old = rotation::finish(&dir.dir)?;
            println!(
                "The old CA (serial {}) is trusted no more; its certificate is kept in retired/. \
                 Copy ca.crt and crl.pem to every member and client.",
                old.serial
            );
        }
    }
    Ok(())
}

fn init(args: InitArgs, format: OutputFormat) -> Result<(), CliError> {
    let members = if let Some(sts) = &args.k8s_statefulset {
        // clap's `requires_all` guarantees these are present.
        let (Some(svc), Some(ns), Some(replicas)) =
            (&args.k8s_service, &args.k8s_namespace, args.replicas)
        else {
            return Err(anyhow!(
                "--k8s-statefulset needs --k8s-service, --k8s-namespace and --replicas"
            )
            .into());
        };
        pki::kubernetes_members(sts, svc, ns, replicas, args.cluster_domain.as_deref())?
    } else if args.members.is_empty() {
        pki::local_members()?
    } else {
        args.members
            .iter()
            .map(|m| parse_member(m))
            .collect::<Result<Vec<_>, PkiError>>()?
    };
    let clients = if args.clients.is_empty() {
        pki::profiles()?.client.default_clients.clone()
    } else {
        args.clients.clone()
    };
    let report = pki::init(&InitOptions {
        dir: args.dir.clone(),
        cluster: args.cluster_name.clone(),
        members,
        clients,
        validity_days: args.validity,
        ca_validity_days: args.ca_validity,
        force: args.force,
    })?;
    if let Some(aside) = &report.moved_aside {
        eprintln!(
            "The previous contents of {} were moved to {}",
            args.dir.display(),
            aside.display()
        );
    }
    let layout = PkiLayout::new(&args.dir);
    match format {
        OutputFormat::Json => {
            let rows: Vec<CertRow> = report
                .certificates
                .iter()
                .map(|c| CertRow::new(c, &layout, "valid", vec![]))
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&ListJson {
                    cluster: &args.cluster_name,
                    dir: &args.dir,
                    certificates: rows
                })?
            );
        }
        _ => {
            println!(
                "Created the PKI of cluster {:?} in {}",
                args.cluster_name,
                args.dir.display()
            );
            for cert in &report.certificates {
                let kind = cert.kind.map(Kind::as_str).unwrap_or("?");
                let files = match cert.kind {
                    Some(k @ (Kind::Member | Kind::Client)) => format!(
                        "{} + {}",
                        layout.cert(k, &cert.common_name).display(),
                        layout.key(k, &cert.common_name).display()
                    ),
                    _ => format!(
                        "{} + {}",
                        layout.ca_cert().display(),
                        layout.ca_key().display()
                    ),
                };
                let sans: Vec<String> = cert.sans.iter().map(ToString::to_string).collect();
                let sans = if sans.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", sans.join(", "))
                };
                println!("  {kind:<6} {:<20} {files}{sans}", cert.common_name);
            }
            println!("  crl    (empty)              {}", layout.crl().display());
            println!("Keys are mode 0600; keep ca.key offline once the cluster is set up.");
        }
    }
    Ok(())
}

/// `NAME` or `NAME=SAN,SAN,...`.
fn parse_member(text: &str) -> Result<(String, Vec<San>), PkiError> {
    match text.split_once('=') {
        None => {
            pki::validate_name("member", text)?;
            Ok((text.to_owned(), pki::default_member_sans(text)?))
        }
        Some((name, sans)) => {
            pki::validate_name("member", name)?;
            let sans = sans
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(San::parse)
                .collect::<Result<Vec<_>, _>>()?;
            if sans.is_empty() {
                return Err(PkiError::Usage(format!(
                    "--member {text:?} lists no SANs after '='; give NAME alone or NAME=SAN,SAN"
                )));
            }
            Ok((name.to_owned(), sans))
        }
    }
}

fn issue(
    leaf: &LeafArgs,
    kind: Kind,
    name: String,
    sans: Vec<San>,
    format: OutputFormat,
) -> Result<(), CliError> {
    let authority = Authority::open(&leaf.dir.dir)?;
    let info = authority.add(&LeafSpec {
        kind,
        name,
        sans,
        validity_days: leaf.validity,
    })?;
    print_issued("Issued", &info, authority.layout(), format)
}

fn print_issued(
    verb: &str,
    info: &CertInfo,
    layout: &PkiLayout,
    format: OutputFormat,
) -> Result<(), CliError> {
    let kind = info.kind.unwrap_or(Kind::Client);
    if format == OutputFormat::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&CertRow::new(info, layout, "valid", vec![]))?
        );
        return Ok(());
    }
    println!(
        "{verb} {kind} certificate {} (serial {}, valid until {})",
        info.common_name,
        info.serial,
        pki::format_time(info.not_after)
    );
    println!(
        "  certificate: {}",
        layout.cert(kind, &info.common_name).display()
    );
    println!(
        "  private key: {} (mode 0600)",
        layout.key(kind, &info.common_name).display()
    );
    Ok(())
}

#[derive(Serialize)]
struct ListJson<'a> {
    cluster: &'a str,
    dir: &'a Path,
    certificates: Vec<CertRow>,
}

#[derive(Serialize)]
struct CertRow {
    name: String,
    kind: String,
    identity: String,
    sans: Vec<String>,
    serial: String,
    not_after: String,
    not_after_unix: i64,
    days_left: i64,
    status: String,
    problems: Vec<String>,
    cert_file: PathBuf,
}

impl CertRow {
    fn new(info: &CertInfo, layout: &PkiLayout, status: &str, problems: Vec<String>) -> CertRow {
        let kind = info.kind;
        CertRow {
            name: info.common_name.clone(),
            kind: kind
                .map(|k| k.as_str().to_owned())
                .unwrap_or_else(|| "unknown".into()),
            identity: info.identity.clone().unwrap_or_default(),
            sans: info.sans.iter().map(ToString::to_string).collect(),
            serial: info.serial.clone(),
            not_after: pki::format_time(info.not_after),
            not_after_unix: info.not_after,
            days_left: info.days_left(pki::now_unix()),
            status: status.to_owned(),
            problems,
            cert_file: kind
                .map(|k| layout.cert(k, &info.common_name))
                .unwrap_or_default(),
        }
    }
}

/// valid / expiring / expired / not-yet-valid / revoked / invalid.
fn status_of(info: &CertInfo, problems: &[Problem], expiring_days: u32, now: i64) -> &'static str {
    if problems
        .iter()
        .any(|p| matches!(p, Problem::Revoked { .. }))
    {
        "revoked"
    } else if problems
        .iter()
        .any(|p| matches!(p, Problem::Expired { .. }))
    {
        "expired"
    } else if problems
        .iter()
        .any(|p| matches!(p, Problem::NotYetValid { .. }))
    {
        "not-yet-valid"
    } else if !problems.is_empty() {
        "invalid"
    } else if info.days_left(now) <= i64::from(expiring_days) {
        "expiring"
    } else {
        "valid"
    }
}

fn list(dir: &Path, format: OutputFormat) -> Result<(), CliError> {
    let layout = PkiLayout::new(dir);
    let trust = Trust::load(&layout)?;
    let expiring = pki::profiles()?.status.expiring_within_days;
    let now = pki::now_unix();

    let mut certs = vec![CertInfo::from_der(trust.ca_der.clone(), &layout.ca_cert())?];
    certs.extend(pki::current_certificates(&layout)?);
    let rows: Vec<CertRow> = certs
        .iter()
        .map(|c| {
            let problems = pki::verify(c, &trust, now);
            let status = status_of(c, &problems, expiring, now);
            CertRow::new(
                c,
                &layout,
                status,
                problems.iter().map(Problem::explain).collect(),
            )
        })
        .collect();

    match format {
        OutputFormat::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&ListJson {
                    cluster: &trust.cluster,
                    dir,
                    certificates: rows
                })?
            );
        }
        OutputFormat::Table => {
            let body = rows
                .iter()
                .map(|r| {
                    vec![
                        r.name.clone(),
                        r.kind.clone(),
                        r.identity.clone(),
                        r.sans.join(", "),
                        r.serial.clone(),
                        r.not_after.clone(),
                        r.days_left.to_string(),
                        r.status.clone(),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(
                    &[
                        "name",
                        "kind",
                        "identity",
                        "sans",
                        "serial",
                        "not after",
                        "days left",
                        "status"
                    ],
                    body
                )
            );
        }
        OutputFormat::Simple => {
            for r in rows {
                println!(
                    "{}, {}, {}, {}, {}, {}, {}, {}",
                    r.name,
                    r.kind,
                    r.identity,
                    r.sans.join(" "),
                    r.serial,
                    r.not_after,
                    r.days_left,
                    r.status
                );
            }
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct InspectJson<'a> {
    #[serde(flatten)]
    info: &'a CertInfo,
    verified_against: Option<&'a Path>,
    valid: Option<bool>,
    problems: Vec<String>,
}

fn inspect(file: &Path, dir: Option<&Path>, format: OutputFormat) -> Result<(), CliError> {
    let info = CertInfo::from_pem_file(file)?;
    let now = pki::now_unix();
    let problems = match dir {
        None => None,
        Some(dir) => Some(pki::verify(&info, &Trust::load(&PkiLayout::new(dir))?, now)),
    };

    if format == OutputFormat::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&InspectJson {
                info: &info,
                verified_against: dir,
                valid: problems.as_ref().map(Vec::is_empty),
                problems: problems.iter().flatten().map(Problem::explain).collect(),
            })?
        );
    } else {
        let kind = match info.kind {
            Some(k) => k.as_str().to_owned(),
            None => "unknown (no rampart identity)".to_owned(),
        };
        let sans: Vec<String> = info.sans.iter().map(ToString::to_string).collect();
        let days_left = info.days_left(now);
        println!("Certificate: {}", file.display());
        println!("  Subject:      {}", info.subject);
        println!("  Issuer:       {}", info.issuer);
        println!("  Kind:         {kind}");
        println!(
            "  Identity:     {}",
            info.identity.as_deref().unwrap_or("(none)")
        );
        println!(
            "  SANs:         {}",
            if sans.is_empty() {
                "(none)".to_owned()
            } else {
                sans.join(", ")
            }
        );
        println!(
            "  Usage:        {}",
            if info.extended_key_usage.is_empty() {
                "(any)".to_owned()
            } else {
                info.extended_key_usage.join(", ")
            }
        );
        println!("  Key:          {}", info.key_algorithm);
        println!("  Serial:       {}", info.serial);
        println!("  Not before:   {}", pki::format_time(info.not_before));
        println!(
            "  Not after:    {} ({})",
            pki::format_time(info.not_after),
            if days_left >= 0 {
                format!("{days_left} days left")
            } else {
                format!("expired {} days ago", -days_left)
            }
        );
        println!("  SHA-256:      {}", info.sha256_fingerprint);
        if let (Some(problems), Some(dir)) = (&problems, dir) {
            if problems.is_empty() {
                println!(
                    "Verdict: valid — signed by the CA in {}, in its validity period, not revoked, right usage and identity",
                    dir.display()
                );
            } else {
                println!("Verdict: NOT valid for the cluster in {}:", dir.display());
                for p in problems {
                    println!("  - {}", p.explain());
                }
            }
        }
    }
    if let Some(problems) = problems
        && !problems.is_empty()
    {
        return Err(CliError::with_code(
            exit::ERROR,
            anyhow!(
                "{} does not verify against the PKI in {}",
                file.display(),
                dir.map(|d| d.display().to_string()).unwrap_or_default()
            ),
        ));
    }
    Ok(())
}

fn revoke(args: RevokeArgs, format: OutputFormat) -> Result<(), CliError> {
    let reason = args.reason.as_deref().map(pki::parse_reason).transpose()?;
    let authority = Authority::open(&args.dir.dir)?;
    let (info, entry, already) = authority.revoke(&args.target, reason)?;
    let crl = authority.crl()?;
    if format == OutputFormat::Json {
        #[derive(Serialize)]
        struct RevokeJson<'a> {
            name: &'a str,
            serial: &'a str,
            already_revoked: bool,
            crl_number: u64,
            revoked_count: usize,
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&RevokeJson {
                name: &info.common_name,
                serial: &entry.serial,
                already_revoked: already,
                crl_number: crl.number,
                revoked_count: crl.revoked.len(),
            })?
        );
        return Ok(());
    }
    let kind = info.kind.map(Kind::as_str).unwrap_or("certificate");
    if already {
        println!(
            "{kind} {} (serial {}) was already revoked on {}; crl.pem unchanged",
            info.common_name,
            entry.serial,
            pki::format_time(entry.revoked_at)
        );
    } else {
        println!(
            "Revoked {kind} {} (serial {})",
            info.common_name, entry.serial
        );
        println!(
            "  {} now lists {} revoked certificate(s), CRL number {}",
            authority.layout().crl().display(),
            crl.revoked.len(),
            crl.number
        );
    }
    Ok(())
}

fn bundle(args: BundleArgs) -> Result<(), CliError> {
    let authority = Authority::open(&args.dir.dir)?;
    let info = authority.find(&args.name)?;
    let kind = info.kind.unwrap_or(Kind::Client);
    let key_path = authority.layout().key(kind, &info.common_name);
    let key_pem = pki::files::read_private_key(&key_path)?;
    let (_, ca_der) = pki::read_ca_cert(authority.layout())?;
    let (password, generated) = match &args.password_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the password file {}", path.display()))?;
            let line = text.lines().next().unwrap_or_default().to_owned();
            if line.is_empty() {
                return Err(CliError::with_code(
                    exit::INVALID_INPUT,
                    anyhow!(
                        "the password file {} is empty; put the password on its first line",
                        path.display()
                    ),
                ));
            }
            (line, false)
        }
        None => (random_password(), true),
    };
    let p12 = pki::pkcs12(
        &info,
        &key_pem,
        ca_der.as_ref(),
        &info.common_name,
        &password,
    )?;
    pki::files::write_atomic(&args.out, &p12, pki::files::PRIVATE_FILE_MODE)?;
    println!(
        "Wrote {} ({kind} {}, with its key and the CA; mode 0600)",
        args.out.display(),
        info.common_name
    );
    if generated {
        println!("Password: {password}");
        println!("(shown once; pass --password-file to choose your own)");
    }
    Ok(())
}

fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 24];
    rand::fill(&mut bytes);
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_parse_in_days_or_years() {
        assert_eq!(parse_days("365"), Ok(365));
        assert_eq!(parse_days("90d"), Ok(90));
        assert_eq!(parse_days("2y"), Ok(730));
        assert!(parse_days("0d").is_err());
        assert!(parse_days("1w").is_err());
        assert!(parse_days("-1").is_err());
    }

    #[test]
    fn member_flags_take_a_name_and_optional_sans() {
        let (name, sans) = parse_member("db-1=db-1.example.com,10.0.0.5").unwrap();
        assert_eq!(name, "db-1");
        assert_eq!(
            sans,
            vec![
                San::Dns("db-1.example.com".into()),
                San::Ip("10.0.0.5".parse().unwrap())
            ]
        );
        let (_, defaults) = parse_member("db-2").unwrap();
        assert!(defaults.contains(&San::Dns("db-2".into())));
        assert!(defaults.contains(&San::Dns("localhost".into())));
        assert!(parse_member("db/1").is_err());
        assert!(parse_member("db-1=").is_err());
        assert!(parse_member("db-1=*.example.com").is_err());
    }
}

//! The certificate authority: creating a PKI, and issuing, renewing and revoking within it.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, SanType,
    SerialNumber,
};
use time::{Duration, OffsetDateTime};

use super::PkiError;
use super::certinfo::{CertInfo, normalize_serial, parse_cert_pem};
use super::crl::{self, CrlState, RevokedEntry};
use super::files::{self, PRIVATE_FILE_MODE, PUBLIC_FILE_MODE};
use super::layout::PkiLayout;
use super::names::{Identity, Kind, San, validate_name};
use super::profile::{self, Algorithm, render};

/// Certificates start a little in the past so that members with slightly slow clocks accept them.
const BACKDATE: Duration = Duration::minutes(5);

/// What to issue: a member or client certificate.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    /// Member or client.
    pub kind: Kind,
    /// The member or user name (validated).
    pub name: String,
    /// DNS and IP SANs (members only).
    pub sans: Vec<San>,
    /// Lifetime; the profile's default when `None`.
    pub validity_days: Option<u32>,
}

/// Everything `pki init` creates.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The PKI directory to create.
    pub dir: PathBuf,
    /// Cluster name (trust domain).
    pub cluster: String,
    /// Members with their SANs.
    pub members: Vec<(String, Vec<San>)>,
    /// Client (user) names.
    pub clients: Vec<String>,
    /// Leaf lifetime; the profile's default when `None`.
    pub validity_days: Option<u32>,
    /// CA lifetime; the profile's default when `None`.
    pub ca_validity_days: Option<u32>,
    /// Move an existing directory aside instead of refusing.
    pub force: bool,
}

/// What `pki init` did.
#[derive(Debug, Clone)]
pub struct InitReport {
    /// Where the previous directory was moved, with `--force`.
    pub moved_aside: Option<PathBuf>,
    /// Every certificate written, CA first.
    pub certificates: Vec<CertInfo>,
}

/// The SANs of the members of a StatefulSet, per the Kubernetes profile.
pub fn kubernetes_members(
    statefulset: &str,
    service: &str,
    namespace: &str,
    replicas: u32,
    domain: Option<&str>,
) -> Result<Vec<(String, Vec<San>)>, PkiError> {
    validate_name("statefulset", statefulset)?;
    validate_name("service", service)?;
    validate_name("namespace", namespace)?;
    if replicas == 0 {
        return Err(PkiError::Usage("--replicas must be at least 1".into()));
    }
    let k8s = &profile::profiles()?.kubernetes;
    let domain = domain.unwrap_or(&k8s.default_domain);
    (0..replicas)
        .map(|i| {
            let pod = format!("{statefulset}-{i}");
            validate_name("member", &pod)?;
            let vars = [
                ("pod", pod.as_str()),
                ("service", service),
                ("namespace", namespace),
                ("domain", domain),
            ];
            let sans = k8s
                .member_sans
                .iter()
                .map(|t| San::parse(&render(t, &vars)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((pod, sans))
        })
        .collect()
}

/// SANs of `--member NAME` given without a list.
pub fn default_member_sans(name: &str) -> Result<Vec<San>, PkiError> {
    profile::profiles()?
        .member
        .default_sans
        .iter()
        .map(|t| San::parse(&render(t, &[("name", name)])))
        .collect()
}

/// The members of the local 3-member cluster.
pub fn local_members() -> Result<Vec<(String, Vec<San>)>, PkiError> {
    let p = &profile::profiles()?.member;
    let sans = p
        .local_sans
        .iter()
        .map(|s| San::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(p.local_members
        .iter()
        .map(|m| (m.clone(), sans.clone()))
        .collect())
}

/// Creates a whole PKI: CA, empty CRL, member and client certificates — all or nothing.
///
/// The PKI is built in a hidden sibling directory, fsynced and renamed into place, so a crash
/// or an error leaves either no PKI or a complete one. An existing non-empty directory is
/// refused unless `force`, in which case it is moved aside (never deleted).
pub fn init(opts: &InitOptions) -> Result<InitReport, PkiError> {
    validate_name("cluster", &opts.cluster)?;
    if opts.members.is_empty() {
        return Err(PkiError::Usage("a PKI needs at least one member".into()));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (name, _) in &opts.members {
        validate_name("member", name)?;
        if !seen.insert(("m", name)) {
            return Err(PkiError::Usage(format!("member {name:?} is given twice")));
        }
    }
    for name in &opts.clients {
        validate_name("client", name)?;
        if !seen.insert(("c", name)) {
            return Err(PkiError::Usage(format!("client {name:?} is given twice")));
        }
    }

    let target = &opts.dir;
    let occupied = match fs::read_dir(target) {
        Ok(mut entries) => entries.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(PkiError::io("reading", target, e)),
    };
    if occupied && !opts.force {
        return Err(PkiError::AlreadyExists {
            dir: target.clone(),
        });
    }
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(|e| PkiError::io("creating directory", &parent, e))?;

    let staging = files::temp_sibling(target, "init");
    let result = build_into(&staging, opts);
    let certificates = match result {
        Ok(certs) => certs,
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
    };

    let mut moved_aside = None;
    if occupied {
        let stamp = OffsetDateTime::now_utc().unix_timestamp();
        let aside = target.with_file_name(format!(
            "{}.replaced-{stamp}",
            target
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        if let Err(e) = fs::rename(target, &aside) {
            let _ = fs::remove_dir_all(&staging);
            return Err(PkiError::io("moving aside", target, e));
        }
        moved_aside = Some(aside);
    }
    if let Err(e) = fs::rename(&staging, target) {
        let _ = fs::remove_dir_all(&staging);
        if let Some(aside) = &moved_aside {
            let _ = fs::rename(aside, target);
        }
        return Err(PkiError::io("renaming into place", target, e));
    }
    files::sync_parent(target)?;
    Ok(InitReport {
        moved_aside,
        certificates,
    })
}

fn build_into(staging: &Path, opts: &InitOptions) -> Result<Vec<CertInfo>, PkiError> {
    // Broken profiles fail before anything is written.
    profile::profiles()?;
    files::create_private_dir(staging)?;
    let layout = PkiLayout::new(staging);
    for kind in [Kind::Member, Kind::Client] {
        files::create_private_dir(&layout.kind_dir(kind))?;
    }
    files::create_private_dir(&layout.issued_dir())?;

    let ca = new_ca(&opts.cluster, opts.ca_validity_days, None)?;
    files::write_new(
        &layout.ca_key(),
        ca.issuer.key().serialize_pem().as_bytes(),
        PRIVATE_FILE_MODE,
    )?;
    files::write_new(&layout.ca_cert(), ca.cert_pem.as_bytes(), PUBLIC_FILE_MODE)?;
    let (issuer, crl_pem, ca_der) = (ca.issuer, ca.crl_pem, ca.cert_der);
    files::write_new(&layout.crl(), crl_pem.as_bytes(), PUBLIC_FILE_MODE)?;

    let mut certificates = vec![CertInfo::from_der(ca_der, &layout.ca_cert())?];
    let specs = opts
        .members
        .iter()
        .map(|(name, sans)| LeafSpec {
            kind: Kind::Member,
            name: name.clone(),
            sans: sans.clone(),
            validity_days: opts.validity_days,
        })
        .chain(opts.clients.iter().map(|name| LeafSpec {
            kind: Kind::Client,
            name: name.clone(),
            sans: vec![],
            validity_days: opts.validity_days,
        }));
    for spec in specs {
        let issued = issue_leaf(&issuer, &opts.cluster, &spec)?;
        files::write_new(
            &layout.key(spec.kind, &spec.name),
            issued.key_pem.as_bytes(),
            PRIVATE_FILE_MODE,
        )?;
        files::write_new(
            &layout.cert(spec.kind, &spec.name),
            issued.cert_pem.as_bytes(),
            PUBLIC_FILE_MODE,
        )?;
        files::write_new(
            &layout.issued(&issued.info.serial),
            issued.cert_pem.as_bytes(),
            PUBLIC_FILE_MODE,
        )?;
        certificates.push(issued.info);
    }
    for dir in [
        layout.kind_dir(Kind::Member),
        layout.kind_dir(Kind::Client),
        layout.issued_dir(),
    ] {
        files::sync_dir(&dir)?;
    }
    files::sync_dir(staging)?;
    Ok(certificates)
}

/// A freshly issued certificate and key, in PEM.
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8). Callers write it with mode 0600 and never log it.
    pub key_pem: String,
    /// The certificate, parsed.
    pub info: CertInfo,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("serial", &self.info.serial)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

fn issue_leaf(
    issuer: &Issuer<'_, KeyPair>,
    cluster: &str,
    spec: &LeafSpec,
) -> Result<Issued, PkiError> {
    validate_name(spec.kind.as_str(), &spec.name)?;
    let profiles = profile::profiles()?;
    let (algorithm, default_days, key_usage, eku) = match spec.kind {
        Kind::Member => (
            profiles.member.algorithm,
            profiles.member.validity_days,
            &profiles.member.key_usage,
            &profiles.member.extended_key_usage,
        ),
        Kind::Client => (
            profiles.client.algorithm,
            profiles.client.validity_days,
            &profiles.client.key_usage,
            &profiles.client.extended_key_usage,
        ),
        Kind::Ca => return Err(PkiError::Usage("a CA is not issued as a leaf".into())),
    };
    if spec.kind == Kind::Client && !spec.sans.is_empty() {
        return Err(PkiError::Usage(
            "client certificates carry no DNS or IP names; only members do".into(),
        ));
    }
    let days = spec.validity_days.unwrap_or(default_days);
    if days == 0 {
        return Err(PkiError::Usage("--validity must be at least 1 day".into()));
    }

    let identity = Identity {
        cluster: cluster.to_owned(),
        kind: spec.kind,
        name: spec.name.clone(),
    };
    let mut params = base_params(&spec.name, days);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = key_usage.iter().map(|k| k.rcgen()).collect();
    params.extended_key_usages = eku.iter().map(|k| k.rcgen()).collect();
    params.use_authority_key_identifier_extension = true;
    let mut sans = spec.sans.clone();
    sans.sort();
    sans.dedup();
    for san in sans {
        params.subject_alt_names.push(match san {
            San::Dns(name) => SanType::DnsName(
                name.try_into()
                    .map_err(PkiError::generate("encode a DNS name"))?,
            ),
            San::Ip(ip) => SanType::IpAddress(ip),
        });
    }
    params.subject_alt_names.push(SanType::URI(
        identity
            .uri()
            .try_into()
            .map_err(PkiError::generate("encode the identity URI"))?,
    ));

    let key = generate_key(algorithm)?;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(PkiError::generate("sign the certificate"))?;
    let info = CertInfo::from_der(cert.der().clone(), Path::new(&spec.name))?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        info,
    })
}

/// A new self-signed CA with its first (empty) CRL.
pub(super) struct NewCa {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The certificate, DER.
    pub cert_der: rustls_pki_types::CertificateDer<'static>,
    /// The CA as an issuer (it holds the private key).
    pub issuer: Issuer<'static, KeyPair>,
    /// Its CRL number 1, listing nothing, PEM.
    pub crl_pem: String,
}

/// Creates a CA for `cluster`. A `generation` (a rotation's new CA) goes into the subject, so
/// that two CAs trusted side by side have different names.
pub(super) fn new_ca(
    cluster: &str,
    validity_days: Option<u32>,
    generation: Option<i64>,
) -> Result<NewCa, PkiError> {
    let profiles = profile::profiles()?;
    let key = generate_key(profiles.ca.algorithm)?;
    let mut params = ca_params(cluster, validity_days)?;
    if let Some(g) = generation {
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, format!("generation {g}"));
    }
    let cert = params
        .self_signed(&key)
        .map_err(PkiError::generate("self-sign the CA certificate"))?;
    let issuer = Issuer::new(params, key);
    let crl_pem = crl::sign(
        &CrlState {
            number: 1,
            revoked: vec![],
        },
        &issuer,
        profiles.crl.validity_days,
    )?;
    Ok(NewCa {
        cert_pem: cert.pem(),
        cert_der: cert.der().clone(),
        issuer,
        crl_pem,
    })
}

fn ca_params(cluster: &str, validity_days: Option<u32>) -> Result<CertificateParams, PkiError> {
    let p = &profile::profiles()?.ca;
    let days = validity_days.unwrap_or(p.validity_days);
    if days == 0 {
        return Err(PkiError::Usage(
            "--ca-validity must be at least 1 day".into(),
        ));
    }
    let vars = [("cluster", cluster)];
    let mut params = base_params(&render(&p.common_name, &vars), days);
    params
        .distinguished_name
        .push(DnType::OrganizationName, p.organization.as_str());
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(p.path_len));
    params.key_usages = p.key_usage.iter().map(|k| k.rcgen()).collect();
    params.subject_alt_names.push(SanType::URI(
        render(&p.identity, &vars)
            .try_into()
            .map_err(PkiError::generate("encode the CA's trust domain"))?,
    ));
    Ok(params)
}

/// Parameters every certificate shares: CN, a fresh random serial, and a validity of `days`
/// starting [`BACKDATE`] ago. (rcgen's defaults — a fixed CN, 1975–4096 — are never used.)
fn base_params(common_name: &str, days: u32) -> CertificateParams {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(i64::from(days));
    params.serial_number = Some(random_serial());
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
}

fn generate_key(algorithm: Algorithm) -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(algorithm.rcgen()).map_err(PkiError::generate("generate a key pair"))
}

/// 128 random bits, positive, with a non-zero first byte so every serial is 16 bytes long.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

/// An existing PKI directory, opened with its CA key: issues, renews and revokes.
pub struct Authority {
    layout: PkiLayout,
    cluster: String,
    ca_der: rustls_pki_types::CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("dir", &self.layout.root())
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

/// Names a certificate in the PKI: `NAME`, `member/NAME` or `client/NAME`.
fn parse_selector(selector: &str) -> (Option<Kind>, &str) {
    if let Some(name) = selector.strip_prefix("member/") {
        (Some(Kind::Member), name)
    } else if let Some(name) = selector.strip_prefix("client/") {
        (Some(Kind::Client), name)
    } else {
        (None, selector)
    }
}

impl Authority {
    /// Opens the PKI in `dir`: checks the CA key's mode, that it matches the CA certificate,
    /// and completes any certificate replacement a crash interrupted.
    pub fn open(dir: &Path) -> Result<Authority, PkiError> {
        let layout = PkiLayout::new(dir);
        let (cluster, ca_der) = read_ca_cert(&layout)?;
        let key_path = layout.ca_key();
        if !key_path.exists() {
            return Err(PkiError::NotInitialized {
                dir: dir.to_owned(),
                path: key_path,
            });
        }
        let key_pem = files::read_private_key(&key_path)?;
        let key_text = String::from_utf8(key_pem)
            .map_err(|_| PkiError::malformed(&key_path, "not a PEM private key (not text)"))?;
        let key = KeyPair::from_pem(&key_text).map_err(|e| {
            PkiError::malformed(
                &key_path,
                format!("not a usable private key ({e}); restore ca.key from your backup"),
            )
        })?;
        let (_, parsed) = x509_parser::parse_x509_certificate(ca_der.as_ref())
            .map_err(|e| PkiError::malformed(layout.ca_cert(), e.to_string()))?;
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(PkiError::malformed(
                &key_path,
                "this key does not belong to ca.crt; restore the matching ca.key from your backup",
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&ca_der, key)
            .map_err(PkiError::generate("load the CA certificate as issuer"))?;
        let authority = Authority {
            layout,
            cluster,
            ca_der,
            issuer,
        };
        authority.recover()?;
        Ok(authority)
    }

    /// The cluster (trust domain) this CA serves.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The directory layout.
    pub fn layout(&self) -> &PkiLayout {
        &self.layout
    }

    /// The issuing CA's subject, as [`CertInfo::issuer`] names it in what it issued.
    pub fn ca_subject(&self) -> Result<String, PkiError> {
        Ok(CertInfo::from_der(self.ca_der.clone(), &self.layout.ca_cert())?.subject)
    }

    fn recover(&self) -> Result<(), PkiError> {
        for kind in [Kind::Member, Kind::Client] {
            let dir = self.layout.kind_dir(kind);
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let file = entry.file_name().to_string_lossy().into_owned();
                let staged = file.strip_prefix('.').and_then(|f| {
                    f.strip_suffix(".crt.next")
                        .or_else(|| f.strip_suffix(".key.next"))
                });
                if let Some(name) = staged {
                    files::recover_pair(
                        &self.layout.cert(kind, name),
                        &self.layout.key(kind, name),
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Issues a new member or client certificate and writes it; refuses to replace one.
    pub fn add(&self, spec: &LeafSpec) -> Result<CertInfo, PkiError> {
        validate_name(spec.kind.as_str(), &spec.name)?;
        let cert_path = self.layout.cert(spec.kind, &spec.name);
        if cert_path.exists() {
            return Err(PkiError::EntityExists {
                kind: spec.kind.as_str(),
                name: spec.name.clone(),
                path: cert_path,
            });
        }
        self.issue_and_write(spec)
    }

    fn issue_and_write(&self, spec: &LeafSpec) -> Result<CertInfo, PkiError> {
        let issued = issue_leaf(&self.issuer, &self.cluster, spec)?;
        let dir = self.layout.kind_dir(spec.kind);
        if !dir.exists() {
            files::create_private_dir(&dir)?;
        }
        let issued_dir = self.layout.issued_dir();
        if !issued_dir.exists() {
            files::create_private_dir(&issued_dir)?;
        }
        files::write_atomic(
            &self.layout.issued(&issued.info.serial),
            issued.cert_pem.as_bytes(),
            PUBLIC_FILE_MODE,
        )?;
        files::replace_pair(
            &self.layout.cert(spec.kind, &spec.name),
            issued.cert_pem.as_bytes(),
            &self.layout.key(spec.kind, &spec.name),
            issued.key_pem.as_bytes(),
        )?;
        Ok(issued.info)
    }

    /// Finds the current certificate named by `selector` (`NAME`, `member/NAME`, `client/NAME`).
    pub fn find(&self, selector: &str) -> Result<CertInfo, PkiError> {
        let (kind, name) = parse_selector(selector);
        let kinds: Vec<Kind> = match kind {
            Some(k) => vec![k],
            None => vec![Kind::Member, Kind::Client],
        };
        let found: Vec<PathBuf> = kinds
            .iter()
            .map(|k| self.layout.cert(*k, name))
            .filter(|p| validate_name("member", name).is_ok() && p.exists())
            .collect();
        match found.as_slice() {
            [] => Err(PkiError::UnknownEntity(selector.to_owned())),
            [one] => CertInfo::from_pem_file(one),
            _ => Err(PkiError::Ambiguous(name.to_owned())),
        }
    }

    /// Issues a new key and certificate with the same identity and SANs; the old certificate
    /// stays valid until it expires unless revoked.
    pub fn renew(&self, selector: &str, validity_days: Option<u32>) -> Result<CertInfo, PkiError> {
        let old = self.find(selector)?;
        let identity = old.parsed_identity().ok_or_else(|| {
            PkiError::Usage(format!(
                "{selector:?} carries no rampart identity; issue a new one instead"
            ))
        })?;
        self.issue_and_write(&LeafSpec {
            kind: identity.kind,
            name: identity.name,
            sans: old.sans.clone(),
            validity_days,
        })
    }

    /// Adds a certificate (by name or serial) to the CRL and rewrites `crl.pem` atomically with
    /// a higher CRL number. Returns the entry and whether it was already revoked.
    pub fn revoke(
        &self,
        selector: &str,
        reason: Option<rcgen::RevocationReason>,
    ) -> Result<(CertInfo, RevokedEntry, bool), PkiError> {
        let cert = match self.find(selector) {
            Ok(cert) => cert,
            Err(PkiError::UnknownEntity(_)) => self.find_issued(selector)?,
            Err(e) => return Err(e),
        };
        let mut state = self.crl()?;
        if let Some(entry) = state.revoked.iter().find(|r| r.serial == cert.serial) {
            return Ok((cert, entry.clone(), true));
        }
        let entry = RevokedEntry {
            serial: cert.serial.clone(),
            revoked_at: OffsetDateTime::now_utc().unix_timestamp(),
            reason: reason.map(|r| r as u8),
        };
        state.revoked.push(entry.clone());
        state.number += 1;
        let mut pem = crl::sign(&state, &self.issuer, profile::profiles()?.crl.validity_days)?;
        // During a CA rotation the other CA's CRL follows ours in the same file.
        pem.push_str(&crl::other_cas_crls(&self.layout.crl())?);
        files::write_atomic(&self.layout.crl(), pem.as_bytes(), PUBLIC_FILE_MODE)?;
        Ok((cert, entry, false))
    }

    fn find_issued(&self, selector: &str) -> Result<CertInfo, PkiError> {
        let unknown = || PkiError::UnknownEntity(selector.to_owned());
        let serial = normalize_serial(selector).ok_or_else(unknown)?;
        let path = self.layout.issued(&serial);
        if !path.exists() {
            return Err(unknown());
        }
        CertInfo::from_pem_file(&path)
    }

    /// The current CRL, signature checked.
    pub fn crl(&self) -> Result<CrlState, PkiError> {
        crl::read(&self.layout.crl(), self.ca_der.as_ref())
    }
}

/// Reads `ca.crt` and the cluster name it names.
pub fn read_ca_cert(
    layout: &PkiLayout,
) -> Result<(String, rustls_pki_types::CertificateDer<'static>), PkiError> {
    let path = layout.ca_cert();
    if !path.exists() {
        return Err(PkiError::NotInitialized {
            dir: layout.root().to_owned(),
            path,
        });
    }
    let der = parse_cert_pem(&files::read(&path)?, &path)?;
    let info = CertInfo::from_der(der.clone(), &path)?;
    if !info.is_ca {
        return Err(PkiError::malformed(&path, "this is not a CA certificate"));
    }
    let cluster = info.cluster.ok_or_else(|| {
        PkiError::malformed(
            &path,
            "the CA names no spiffe:// trust domain; it was not made by rampart",
        )
    })?;
    Ok((cluster, der))
}

/// Every member and client certificate currently in the PKI directory, members first.
pub fn current_certificates(layout: &PkiLayout) -> Result<Vec<CertInfo>, PkiError> {
    let mut out = Vec::new();
    for kind in [Kind::Member, Kind::Client] {
        let dir = layout.kind_dir(kind);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(PkiError::io("reading", &dir, e)),
        };
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "crt")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        paths.sort();
        for path in paths {
            out.push(CertInfo::from_pem_file(&path)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::pki::files::failpoint;
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;

    fn options(dir: &Path) -> InitOptions {
        InitOptions {
            dir: dir.to_owned(),
            cluster: "prod".into(),
            members: local_members().unwrap(),
            clients: vec!["root".into(), "alice".into()],
            validity_days: None,
            ca_validity_days: None,
            force: false,
        }
    }

    /// A new PKI (members rampart-0..2, clients root and alice) in a temporary directory.
    pub(crate) fn fresh_dir() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        init(&options(&dir)).unwrap();
        (tmp, dir)
    }

    /// A new PKI in a temporary directory, opened.
    fn fresh() -> (tempfile::TempDir, PathBuf, Authority) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        init(&options(&dir)).unwrap();
        let ca = Authority::open(&dir).unwrap();
        (tmp, dir, ca)
    }

    /// Every file under `dir` with its contents, to prove nothing changed.
    fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            for entry in fs::read_dir(&d).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    out.insert(path.clone(), fs::read(&path).unwrap());
                }
            }
        }
        out
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn init_writes_the_whole_layout_with_private_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        let report = init(&options(&dir)).unwrap();
        assert_eq!(report.certificates.len(), 1 + 3 + 2);
        let layout = PkiLayout::new(&dir);
        for path in [
            layout.root().to_owned(),
            layout.kind_dir(Kind::Member),
            layout.kind_dir(Kind::Client),
        ] {
            assert_eq!(mode(&path), 0o700, "{}", path.display());
        }
        assert_eq!(mode(&layout.ca_key()), 0o600);
        for name in ["rampart-0", "rampart-1", "rampart-2"] {
            assert_eq!(mode(&layout.key(Kind::Member, name)), 0o600);
            assert!(layout.cert(Kind::Member, name).exists());
        }
        assert_eq!(mode(&layout.key(Kind::Client, "alice")), 0o600);
        assert!(layout.crl().exists());
        // No staging directory is left beside it.
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn certificates_follow_the_identity_model() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        let report = init(&options(&dir)).unwrap();
        let now = crate::pki::now_unix();
        let ca = &report.certificates[0];
        assert!(ca.is_ca);
        assert_eq!(ca.kind, Some(Kind::Ca));
        assert_eq!(ca.cluster.as_deref(), Some("prod"));
        assert!((ca.not_after - now - 3650 * 86_400).abs() < 60);

        let (_, parsed) = x509_parser::parse_x509_certificate(ca.der.as_ref()).unwrap();
        let bc = parsed.basic_constraints().unwrap().unwrap().value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(0));
        let ku = parsed.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());

        let member = report
            .certificates
            .iter()
            .find(|c| c.common_name == "rampart-1")
            .unwrap();
        assert_eq!(member.kind, Some(Kind::Member));
        assert_eq!(
            member.identity.as_deref(),
            Some("spiffe://prod/member/rampart-1")
        );
        assert_eq!(member.extended_key_usage, vec!["serverAuth", "clientAuth"]);
        assert!(member.sans.contains(&San::Ip([127, 0, 0, 1].into())));
        assert!(member.sans.contains(&San::Dns("localhost".into())));
        assert_eq!(member.key_algorithm, "ECDSA P-256");
        assert_eq!(member.serial.len(), 32, "128-bit serial");
        assert!((member.not_after - now - 365 * 86_400).abs() < 60);

        let client = report
            .certificates
            .iter()
            .find(|c| c.common_name == "alice")
            .unwrap();
        assert_eq!(client.identity.as_deref(), Some("spiffe://prod/user/alice"));
        assert_eq!(client.extended_key_usage, vec!["clientAuth"]);
        assert!(client.sans.is_empty());

        let serials: std::collections::BTreeSet<_> =
            report.certificates.iter().map(|c| &c.serial).collect();
        assert_eq!(
            serials.len(),
            report.certificates.len(),
            "serials are unique"
        );

        let trust = crate::pki::Trust::load(&PkiLayout::new(&dir)).unwrap();
        for cert in &report.certificates {
            assert!(crate::pki::verify(cert, &trust, now).is_empty());
        }
    }

    #[test]
    fn init_refuses_an_existing_pki_and_force_moves_it_aside() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        init(&options(&dir)).unwrap();
        let before = snapshot(&dir);
        let err = init(&options(&dir)).unwrap_err();
        assert!(matches!(err, PkiError::AlreadyExists { .. }), "{err}");
        assert!(err.to_string().contains("--force"));
        assert_eq!(snapshot(&dir), before);

        let report = init(&InitOptions {
            force: true,
            ..options(&dir)
        })
        .unwrap();
        let aside = report.moved_aside.expect("the old PKI is kept");
        let old_ca_key = fs::read(PkiLayout::new(&aside).ca_key()).unwrap();
        assert_eq!(old_ca_key, before[&PkiLayout::new(&dir).ca_key()]);
        assert_ne!(fs::read(PkiLayout::new(&dir).ca_key()).unwrap(), old_ca_key);
    }

    #[test]
    fn init_interrupted_half_way_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        failpoint::fail_after(5);
        let err = init(&options(&dir)).unwrap_err();
        failpoint::clear();
        assert!(err.to_string().contains("injected failure"), "{err}");
        assert!(!dir.exists());
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            0,
            "staging removed"
        );
    }

    #[test]
    fn duplicate_and_invalid_names_are_refused_before_anything_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        let mut opts = options(&dir);
        opts.clients = vec!["root".into(), "root".into()];
        assert!(init(&opts).unwrap_err().to_string().contains("given twice"));
        opts.clients = vec!["../evil".into()];
        assert!(matches!(
            init(&opts).unwrap_err(),
            PkiError::InvalidName { .. }
        ));
        opts.clients = vec![];
        opts.cluster = "Prod".into();
        assert!(matches!(
            init(&opts).unwrap_err(),
            PkiError::InvalidName { .. }
        ));
        assert!(!dir.exists());
    }

    #[test]
    fn issue_adds_and_refuses_to_overwrite() {
        let (_tmp, _dir, ca) = fresh();
        let spec = LeafSpec {
            kind: Kind::Member,
            name: "db-4".into(),
            sans: vec![San::parse("db-4.example.com").unwrap()],
            validity_days: Some(30),
        };
        let info = ca.add(&spec).unwrap();
        assert_eq!(info.identity.as_deref(), Some("spiffe://prod/member/db-4"));
        assert!((info.not_after - crate::pki::now_unix() - 30 * 86_400).abs() < 60);
        assert!(ca.layout().issued(&info.serial).exists());
        assert!(matches!(
            ca.add(&spec).unwrap_err(),
            PkiError::EntityExists { .. }
        ));
        let client_with_sans = LeafSpec {
            kind: Kind::Client,
            name: "bob".into(),
            sans: vec![San::parse("bob.example.com").unwrap()],
            validity_days: None,
        };
        assert!(matches!(
            ca.add(&client_with_sans).unwrap_err(),
            PkiError::Usage(_)
        ));
    }

    #[test]
    fn renew_keeps_identity_and_sans_with_a_new_key_and_serial() {
        let (_tmp, _dir, ca) = fresh();
        let layout = ca.layout().clone();
        let old = ca.find("rampart-1").unwrap();
        let old_key = fs::read(layout.key(Kind::Member, "rampart-1")).unwrap();
        let new = ca.renew("member/rampart-1", None).unwrap();
        assert_eq!(new.identity, old.identity);
        assert_eq!(new.sans, old.sans);
        assert_ne!(new.serial, old.serial);
        assert_ne!(
            fs::read(layout.key(Kind::Member, "rampart-1")).unwrap(),
            old_key
        );
        // The old certificate stays in the archive and is not revoked.
        assert!(layout.issued(&old.serial).exists());
        assert!(!ca.crl().unwrap().is_revoked(&old.serial));
    }

    #[test]
    fn renew_interrupted_half_way_keeps_the_old_pair() {
        let (_tmp, dir, ca) = fresh();
        let before = snapshot(&dir.join("members"));
        // Archive copy and staged key succeed; the staged certificate fails.
        failpoint::fail_after(2);
        assert!(ca.renew("rampart-0", None).is_err());
        failpoint::clear();
        Authority::open(&dir).unwrap(); // runs recovery
        assert_eq!(snapshot(&dir.join("members")), before);
    }

    #[test]
    fn revoke_grows_the_crl_and_bumps_its_number() {
        let (_tmp, _dir, ca) = fresh();
        assert_eq!(ca.crl().unwrap().number, 1);
        let (cert, entry, already) = ca
            .revoke("alice", Some(rcgen::RevocationReason::KeyCompromise))
            .unwrap();
        assert!(!already);
        assert_eq!(entry.serial, cert.serial);
        let crl = ca.crl().unwrap();
        assert_eq!((crl.number, crl.revoked.len()), (2, 1));
        assert_eq!(crl.revoked[0].reason, Some(1));

        // By serial, with separators and upper case, as people paste them.
        let root = ca.find("root").unwrap();
        let pasted: String = root
            .serial
            .to_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(":");
        ca.revoke(&pasted, None).unwrap();
        let crl = ca.crl().unwrap();
        assert_eq!((crl.number, crl.revoked.len()), (3, 2));
        assert!(crl.is_revoked(&root.serial) && crl.is_revoked(&cert.serial));

        // Again: nothing changes.
        let before = fs::read(ca.layout().crl()).unwrap();
        assert!(ca.revoke("alice", None).unwrap().2);
        assert_eq!(fs::read(ca.layout().crl()).unwrap(), before);

        // A renewed-away certificate can still be revoked by its serial.
        let old = ca.find("rampart-2").unwrap();
        ca.renew("rampart-2", None).unwrap();
        ca.revoke(&old.serial, None).unwrap();
        assert!(ca.crl().unwrap().is_revoked(&old.serial));
        assert!(
            !ca.crl()
                .unwrap()
                .is_revoked(&ca.find("rampart-2").unwrap().serial)
        );

        assert!(matches!(
            ca.revoke("nobody", None).unwrap_err(),
            PkiError::UnknownEntity(_)
        ));
        assert!(matches!(
            ca.revoke("ffff", None).unwrap_err(),
            PkiError::UnknownEntity(_)
        ));
    }

    #[test]
    fn revoke_interrupted_leaves_the_crl_intact() {
        let (_tmp, dir, ca) = fresh();
        let before = fs::read(ca.layout().crl()).unwrap();
        failpoint::fail_after(0);
        assert!(ca.revoke("alice", None).is_err());
        failpoint::clear();
        assert_eq!(fs::read(ca.layout().crl()).unwrap(), before);
        assert_eq!(
            fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
                .count(),
            0
        );
    }

    #[test]
    fn a_loose_or_foreign_or_corrupt_ca_key_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        let other = tmp.path().join("other");
        init(&options(&dir)).unwrap();
        init(&options(&other)).unwrap();
        let layout = PkiLayout::new(&dir);

        fs::set_permissions(layout.ca_key(), fs::Permissions::from_mode(0o644)).unwrap();
        let err = Authority::open(&dir).unwrap_err();
        assert!(
            matches!(err, PkiError::KeyPermissions { mode: 0o644, .. }),
            "{err}"
        );
        fs::set_permissions(layout.ca_key(), fs::Permissions::from_mode(0o600)).unwrap();

        let own = fs::read(layout.ca_key()).unwrap();
        fs::write(
            layout.ca_key(),
            fs::read(PkiLayout::new(&other).ca_key()).unwrap(),
        )
        .unwrap();
        let err = Authority::open(&dir).unwrap_err().to_string();
        assert!(err.contains("does not belong to ca.crt"), "{err}");

        // The real key with its body replaced: still PEM-shaped, no longer a key.
        let text = String::from_utf8(own.clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mangled = format!("{}\nAAAA\n{}\n", lines[0], lines[lines.len() - 1]);
        fs::write(layout.ca_key(), mangled).unwrap();
        let err = Authority::open(&dir).unwrap_err().to_string();
        assert!(err.contains("not a usable private key"), "{err}");
        fs::write(layout.ca_key(), own).unwrap();
        Authority::open(&dir).unwrap();
    }

    #[test]
    fn kubernetes_members_answer_to_every_statefulset_name() {
        let members = kubernetes_members("etcd", "etcd-headless", "db", 3, None).unwrap();
        assert_eq!(members.len(), 3);
        let (name, sans) = &members[2];
        assert_eq!(name, "etcd-2");
        for expected in [
            "etcd-2",
            "etcd-2.etcd-headless",
            "etcd-2.etcd-headless.db",
            "etcd-2.etcd-headless.db.svc",
            "etcd-2.etcd-headless.db.svc.cluster.local",
            "etcd-headless.db.svc.cluster.local",
            "etcd-headless-client.db.svc.cluster.local",
        ] {
            assert!(sans.contains(&San::Dns(expected.into())), "{expected}");
        }
        let custom = kubernetes_members("r", "r", "ns", 1, Some("corp.internal")).unwrap();
        assert!(
            custom[0]
                .1
                .contains(&San::Dns("r-0.r.ns.svc.corp.internal".into()))
        );
        assert!(kubernetes_members("R", "r", "ns", 1, None).is_err());
        assert!(kubernetes_members("r", "r", "ns", 0, None).is_err());
    }
}

//! `rampart install` / `rampart uninstall`: a member as a hardened systemd service.
//!
//! Installing is a plan of files and directories, each with its mode and owner, carried out
//! into `/` or a staging `--root` (images, tests), or only printed (`--dry-run`). Re-running is
//! idempotent: unchanged files are left alone, certificates are updated (that is how renewed
//! ones are distributed), and a configuration changed by hand is never overwritten without
//! `--force`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use clap::Args;

use super::CliError;
use crate::pki::{CertInfo, Kind, PkiLayout, San};

/// The unit file, as shipped in `systemd/`.
const UNIT: &str = include_str!("../../systemd/rampart.service");
/// The sysusers.d entry.
const SYSUSERS: &str = include_str!("../../systemd/rampart.sysusers");
/// The service user.
const SERVICE_USER: &str = "rampart";

/// `rampart install`.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// This member's name (its certificate is members/NAME.crt in --pki-dir).
    #[arg(long)]
    name: String,
    /// The `rampart pki` directory; only this member's certificate and key, the CA and the CRL
    /// are installed.
    #[arg(long)]
    pki_dir: PathBuf,
    /// Every member as NAME=https://HOST:2380,... Default: this member alone.
    #[arg(long)]
    initial_cluster: Option<String>,
    /// new (forming the cluster) or existing (joining after `member add`).
    #[arg(long, default_value = "new")]
    initial_cluster_state: String,
    /// The cluster token (the same on every member).
    #[arg(long, default_value = "rampart")]
    initial_cluster_token: String,
    /// The host clients and peers reach this member at. Default: the first DNS name or IP
    /// of its certificate.
    #[arg(long)]
    advertise_host: Option<String>,
    /// Use this configuration file instead of generating one.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Install into this directory instead of / (an image or a test).
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Print every file and mode, write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Overwrite a configuration that was changed since it was installed.
    #[arg(long)]
    force: bool,
}

/// `rampart uninstall`.
#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// Uninstall from this directory instead of /.
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Also delete the configuration, certificates and data.
    #[arg(long)]
    purge: bool,
}

/// Who owns an installed path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Root,
    /// The service user (root when it does not exist here; tmpfiles.d fixes it at boot).
    Service,
}

#[derive(Debug)]
enum Content {
    Dir,
    File(Vec<u8>),
}

#[derive(Debug)]
struct Item {
    /// Absolute path on the target system.
    path: String,
    mode: u32,
    owner: Owner,
    content: Content,
    /// Never replaced when changed, without --force.
    protected: bool,
}

impl Item {
    fn target(&self) -> &str {
        &self.path
    }
}

fn dir(path: &str, mode: u32, owner: Owner) -> Item {
    Item {
        path: path.to_owned(),
        mode,
        owner,
        content: Content::Dir,
        protected: false,
    }
}

fn file(path: String, mode: u32, owner: Owner, bytes: Vec<u8>) -> Item {
    Item {
        path,
        mode,
        owner,
        content: Content::File(bytes),
        protected: false,
    }
}

/// The host peers and clients reach this member at: the certificate's first DNS name or IP.
fn host_of(cert: &CertInfo) -> Option<String> {
    cert.sans.first().map(|s| match s {
        San::Dns(name) => name.clone(),
        San::Ip(ip) if ip.is_ipv6() => format!("[{ip}]"),
        San::Ip(ip) => ip.to_string(),
    })
}

/// The configuration of the installed member.
fn config_text(args: &InstallArgs, host: &str) -> String {
    let cluster = args
        .initial_cluster
        .clone()
        .unwrap_or_else(|| format!("{}=https://{host}:2380", args.name));
    format!(
        "# Member {name}, installed by `rampart install`. Flags and RAMPART_* variables override\n\
         # these keys; `systemctl reload rampart` re-reads certificates and the CRL.\n\
         name = \"{name}\"\n\
         data-dir = \"/var/lib/rampart\"\n\
         pki-dir = \"/etc/rampart/pki\"\n\
         listen-client-urls = \"https://0.0.0.0:2379\"\n\
         advertise-client-urls = \"https://{host}:2379\"\n\
         listen-peer-urls = \"https://0.0.0.0:2380\"\n\
         initial-advertise-peer-urls = \"https://{host}:2380\"\n\
         initial-cluster = \"{cluster}\"\n\
         initial-cluster-state = \"{state}\"\n\
         initial-cluster-token = \"{token}\"\n",
        name = args.name,
        state = args.initial_cluster_state,
        token = args.initial_cluster_token,
    )
}

fn plan(args: &InstallArgs) -> anyhow::Result<Vec<Item>> {
    if !matches!(args.initial_cluster_state.as_str(), "new" | "existing") {
        bail!(
            "--initial-cluster-state {:?}: use new or existing",
            args.initial_cluster_state
        );
    }
    let layout = PkiLayout::new(&args.pki_dir);
    let cert_path = layout.cert(Kind::Member, &args.name);
    let key_path = layout.key(Kind::Member, &args.name);
    let cert = CertInfo::from_pem_file(&cert_path).with_context(|| {
        format!(
            "no member certificate for {} in {}; issue one with `rampart pki issue member {}`",
            args.name,
            args.pki_dir.display(),
            args.name
        )
    })?;
    crate::pki::files::check_private_mode(&key_path)?;
    let read = |p: &Path| fs::read(p).with_context(|| format!("reading {}", p.display()));
    let host = match &args.advertise_host {
        Some(h) => h.clone(),
        None => host_of(&cert).ok_or_else(|| {
            anyhow!(
                "{} names no DNS name or IP; pass --advertise-host",
                cert_path.display()
            )
        })?,
    };
    let config = match &args.config {
        Some(path) => read(path)?,
        None => config_text(args, &host).into_bytes(),
    };
    let exe = std::env::current_exe().context("finding this program")?;
    let tmpfiles = format!(
        "# Ownership of what `rampart install` wrote, for images built with --root.\n\
         z /etc/rampart 0750 root {u} -\n\
         z /etc/rampart/rampart.toml 0640 root {u} -\n\
         z /etc/rampart/pki 0750 root {u} -\n\
         z /etc/rampart/pki/members 0750 root {u} -\n\
         z /etc/rampart/pki/members/{n}.key 0600 {u} {u} -\n\
         d /var/lib/rampart 0700 {u} {u} -\n",
        u = SERVICE_USER,
        n = args.name
    );
    let mut items = vec![
        file(
            "/usr/local/bin/rampart".into(),
            0o755,
            Owner::Root,
            read(&exe)?,
        ),
        file(
            "/usr/lib/sysusers.d/rampart.conf".into(),
            0o644,
            Owner::Root,
            SYSUSERS.as_bytes().to_vec(),
        ),
        file(
            "/usr/lib/tmpfiles.d/rampart.conf".into(),
            0o644,
            Owner::Root,
            tmpfiles.into_bytes(),
        ),
        file(
            "/etc/systemd/system/rampart.service".into(),
            0o644,
            Owner::Root,
            UNIT.as_bytes().to_vec(),
        ),
        dir("/etc/rampart", 0o750, Owner::Root),
        Item {
            protected: true,
            ..file(
                "/etc/rampart/rampart.toml".into(),
                0o640,
                Owner::Root,
                config,
            )
        },
        dir("/etc/rampart/pki", 0o750, Owner::Root),
        dir("/etc/rampart/pki/members", 0o750, Owner::Root),
        file(
            "/etc/rampart/pki/ca.crt".into(),
            0o644,
            Owner::Root,
            read(&layout.ca_cert())?,
        ),
        file(
            "/etc/rampart/pki/crl.pem".into(),
            0o644,
            Owner::Root,
            read(&layout.crl())?,
        ),
        file(
            format!("/etc/rampart/pki/members/{}.crt", args.name),
            0o644,
            Owner::Root,
            read(&cert_path)?,
        ),
        file(
            format!("/etc/rampart/pki/members/{}.key", args.name),
            0o600,
            Owner::Service,
            read(&key_path)?,
        ),
        dir("/var/lib/rampart", 0o700, Owner::Service),
    ];
    // Directories first, so that files land in them.
    items.sort_by_key(|i| !matches!(i.content, Content::Dir));
    Ok(items)
}

fn under(root: &Path, target: &str) -> PathBuf {
    root.join(target.trim_start_matches('/'))
}

/// The uid and gid of `user` in `root`'s /etc/passwd, if it is there.
fn lookup_user(root: &Path, user: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string(under(root, "/etc/passwd")).ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() > 3 && f[0] == user)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .flatten()
    })
}

/// Creates the service user on this machine (installing into /).
fn ensure_user(root: &Path) -> anyhow::Result<Option<(u32, u32)>> {
    if let Some(ids) = lookup_user(root, SERVICE_USER) {
        return Ok(Some(ids));
    }
    if root != Path::new("/") {
        // An image: systemd-sysusers creates the user at boot, tmpfiles.d fixes ownership.
        return Ok(None);
    }
    let status = std::process::Command::new("useradd")
        .args([
            "--system",
            "--home-dir",
            "/var/lib/rampart",
            "--no-create-home",
        ])
        .args(["--shell", "/usr/sbin/nologin", "--user-group", SERVICE_USER])
        .status()
        .context("running useradd to create the rampart user")?;
    if !status.success() {
        bail!("useradd could not create the user {SERVICE_USER}");
    }
    Ok(lookup_user(root, SERVICE_USER))
}

fn owner_label(o: Owner) -> &'static str {
    match o {
        Owner::Root => "root",
        Owner::Service => SERVICE_USER,
    }
}

/// Runs `rampart install`.
pub fn run_install(args: InstallArgs) -> Result<(), CliError> {
    let items = plan(&args)?;
    let root = &args.root;
    if args.dry_run {
        for i in &items {
            let what = match &i.content {
                Content::Dir => "directory".to_owned(),
                Content::File(b) => format!("{} bytes", b.len()),
            };
            println!(
                "would write {} (mode {:04o}, owner {}, {what})",
                under(root, i.target()).display(),
                i.mode,
                owner_label(i.owner)
            );
        }
        return Ok(());
    }
    // Refuse before writing anything: a changed configuration stays unless --force.
    for i in items.iter().filter(|i| i.protected) {
        let path = under(root, i.target());
        if let (Content::File(new), Ok(old)) = (&i.content, fs::read(&path))
            && &old != new
            && !args.force
        {
            return Err(anyhow!(
                "{} differs from what this install would write (changed by hand?); keep it, or pass --force to replace it",
                path.display()
            )
            .into());
        }
    }
    let service = ensure_user(root)?;
    let mut changed = 0;
    for i in &items {
        let path = under(root, i.target());
        match &i.content {
            Content::Dir => {
                fs::create_dir_all(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
            }
            Content::File(bytes) => {
                if fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
                    if let Some(parent) = path.parent() {
                        fs::create_dir_all(parent)
                            .with_context(|| format!("creating {}", parent.display()))?;
                    }
                    crate::pki::files::write_atomic(&path, bytes, i.mode)?;
                    changed += 1;
                }
            }
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(i.mode))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
        let ids = match i.owner {
            Owner::Root => Some((0, 0)),
            Owner::Service => service,
        };
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                .with_context(|| format!("setting the owner of {}", path.display()))?;
        }
        if i.owner == Owner::Root
            && matches!(i.content, Content::Dir)
            && i.mode == 0o750
            && let Some((_, gid)) = service
        {
            // Directories the service reads: group rampart.
            std::os::unix::fs::chown(&path, Some(0), Some(gid))
                .with_context(|| format!("setting the group of {}", path.display()))?;
        }
    }
    if let Some((_, gid)) = service {
        let config = under(root, "/etc/rampart/rampart.toml");
        std::os::unix::fs::chown(&config, Some(0), Some(gid))
            .with_context(|| format!("setting the group of {}", config.display()))?;
    }
    println!(
        "Installed member {} into {} ({changed} files written).",
        args.name,
        root.display()
    );
    println!("Start it with: systemctl daemon-reload && systemctl enable --now rampart");
    Ok(())
}

/// Runs `rampart uninstall`.
pub fn run_uninstall(args: UninstallArgs) -> Result<(), CliError> {
    let root = &args.root;
    let mut remove = vec![
        "/etc/systemd/system/rampart.service",
        "/usr/lib/sysusers.d/rampart.conf",
        "/usr/lib/tmpfiles.d/rampart.conf",
        "/usr/local/bin/rampart",
    ];
    for f in remove.drain(..) {
        let path = under(root, f);
        match fs::remove_file(&path) {
            Ok(()) => println!("removed {}", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow!("removing {}: {e}", path.display()).into()),
        }
    }
    if args.purge {
        for d in ["/etc/rampart", "/var/lib/rampart"] {
            let path = under(root, d);
            if path.exists() {
                fs::remove_dir_all(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
                println!("removed {}", path.display());
            }
        }
    } else {
        println!(
            "kept {} and {} (pass --purge to delete the configuration, certificates and data)",
            under(root, "/etc/rampart").display(),
            under(root, "/var/lib/rampart").display()
        );
    }
    Ok(())
}

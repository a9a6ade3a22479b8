//! `rampart k8s manifests`: a cluster on Kubernetes as one StatefulSet, and
//! `rampart k8s member-pki`: the init step that gives each pod its own certificate.
//!
//! The manifests are built as JSON values (field order kept) and written as YAML documents, so
//! every string is quoted where YAML needs it; nothing is pasted into a text template.
//!
//! One StatefulSet template serves every pod, so it cannot name a per-pod Secret. Each member's
//! certificate and key live in their own Secret (`NAME-i-tls`); one projected volume brings
//! them into the pod, mounted only in the init container, which copies the files of
//! `$(POD_NAME)` into an in-memory volume as a PKI directory (key mode 0600, owned by the
//! member's user: a Secret volume cannot give a non-root user a 0600 key). The member
//! container mounts only that copy, so the running member never sees another member's key.
//! The kubelet still writes every member's Secret into each pod's volume on the node; keeping
//! them off the node too would take a CSI secrets driver (see the README).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use super::{CliError, exit};
use crate::pki::{self, CertInfo, Kind, PkiLayout, San, Trust, validate_name};

/// The client port, as etcd's.
pub const CLIENT_PORT: u16 = 2379;
/// The peer port, as etcd's.
pub const PEER_PORT: u16 = 2380;
/// Most members a cluster may have: etcd advises against more than seven (every write waits
/// for a quorum, and elections take longer).
pub const MAX_REPLICAS: u32 = 7;
/// Longest StatefulSet name Kubernetes accepts in practice: its pods carry a
/// `controller-revision-hash` label of NAME plus an 11-character hash, at most 63 characters.
const MAX_NAME_LEN: usize = 52;
/// The user and group the member runs as (no root, no shell needed).
const RUN_AS: u32 = 65532;

/// Where the init container finds every member's Secret (`DIR/POD/tls.crt` ...).
const SECRETS_MOUNT: &str = "/var/run/rampart/secrets";
/// The in-memory PKI directory of this pod's member.
const PKI_MOUNT: &str = "/var/run/rampart/pki";
/// The persistent volume.
const DATA_MOUNT: &str = "/var/lib/rampart";

/// Keys of a member's Secret: the `kubernetes.io/tls` pair, the CA bundle and the CRL.
const SECRET_CERT: &str = "tls.crt";
const SECRET_KEY: &str = "tls.key";
const SECRET_CA: &str = "ca.crt";
const SECRET_CRL: &str = "crl.pem";

#[derive(Debug, Subcommand)]
pub(crate) enum K8sCommand {
    /// Print the Kubernetes manifests of a cluster: Services, StatefulSet, PodDisruptionBudget
    /// (and, with --pki-dir, the members' Secrets) as YAML on stdout.
    Manifests(ManifestsArgs),
    /// Inside a pod: copy this member's certificate and key from the mounted Secrets into a
    /// PKI directory for `rampart serve --pki-dir` (the StatefulSet's init step).
    MemberPki(MemberPkiArgs),
}

/// `--initial-cluster-state` of the members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ClusterState {
    /// Form a new cluster.
    New,
    /// Join a running one.
    Existing,
}

impl ClusterState {
    fn as_str(self) -> &'static str {
        match self {
            ClusterState::New => "new",
            ClusterState::Existing => "existing",
        }
    }
}

/// Whether two members may share a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum AntiAffinity {
    /// Spread members over nodes when the scheduler can; share a node otherwise.
    Preferred,
    /// Never two members on one node (pods stay pending without enough nodes).
    Required,
}

#[derive(Debug, Args)]
pub(crate) struct ManifestsArgs {
    /// The StatefulSet's name; also its headless Service's. Members are NAME-0 … NAME-(N-1).
    #[arg(long)]
    name: String,
    /// The namespace.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Members (odd: 1, 3, 5 or 7).
    #[arg(long, default_value_t = 3)]
    replicas: u32,
    /// The container image with the rampart binary on its PATH.
    #[arg(long, default_value = concat!("rampart:", env!("CARGO_PKG_VERSION")))]
    image: String,
    /// Size of each member's data volume.
    #[arg(long, default_value = "10Gi")]
    storage: String,
    /// The storage class of the data volumes. Default: the cluster's default class.
    #[arg(long)]
    storage_class: Option<String>,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// The token that makes member and cluster IDs unique. Default: NAME-NAMESPACE.
    #[arg(long)]
    initial_cluster_token: Option<String>,
    /// `new` to form the cluster; `existing` when adding pods to a running cluster after
    /// `rampart member add` (members that already have data ignore it).
    #[arg(long, value_enum, default_value_t = ClusterState::New)]
    initial_cluster_state: ClusterState,
    /// Spread members over nodes: preferred or required.
    #[arg(long, value_enum, default_value_t = AntiAffinity::Preferred)]
    anti_affinity: AntiAffinity,
    /// A PKI made by `rampart pki init --k8s-statefulset NAME ...`: include one Secret per
    /// member (its certificate and key, the CA and the CRL). The output then holds private keys.
    #[arg(long)]
    pki_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct MemberPkiArgs {
    /// This member (the pod's name).
    #[arg(long, env = "RAMPART_NAME")]
    name: String,
    /// Where the members' Secrets are mounted, one directory per member.
    #[arg(long, default_value = SECRETS_MOUNT)]
    secrets_dir: PathBuf,
    /// The PKI directory to write (ca.crt, crl.pem, members/NAME.crt|key).
    #[arg(long, default_value = PKI_MOUNT)]
    out: PathBuf,
}

/// A checked request for manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Spec {
    name: String,
    namespace: String,
    replicas: u32,
    image: String,
    storage: String,
    storage_class: Option<String>,
    domain: String,
    token: String,
    state: ClusterState,
    anti_affinity: AntiAffinity,
}

impl Spec {
    /// Validates the flags; the `Vec` holds warnings for stderr.
    fn from_args(a: &ManifestsArgs) -> anyhow::Result<(Spec, Vec<String>)> {
        let mut warnings = Vec::new();
        validate_name("StatefulSet", &a.name)?;
        if a.name.len() > MAX_NAME_LEN {
            bail!(
                "--name {:?} is {} characters; Kubernetes needs a StatefulSet name of at most {MAX_NAME_LEN}",
                a.name,
                a.name.len()
            );
        }
        validate_name("namespace", &a.namespace)?;
        match a.replicas {
            0 => bail!("--replicas must be at least 1"),
            n if n > MAX_REPLICAS => bail!(
                "--replicas {n}: at most {MAX_REPLICAS} members (every write waits for a quorum; \
                 etcd advises 3, 5 or 7); serve more readers with learners or more clients"
            ),
            n if n % 2 == 0 => warnings.push(format!(
                "--replicas {n} is even: it survives no more failures than {} members would, with a \
                 larger quorum to wait for; etcd recommends an odd number",
                n - 1
            )),
            _ => {}
        }
        match San::parse(&a.cluster_domain) {
            Ok(San::Dns(_)) => {}
            _ => bail!(
                "--cluster-domain {:?} is not a DNS domain (e.g. cluster.local)",
                a.cluster_domain
            ),
        }
        if a.image.is_empty() || a.image.chars().any(char::is_whitespace) {
            bail!("--image {:?} is not an image reference", a.image);
        }
        if !is_quantity(&a.storage) {
            bail!(
                "--storage {:?} is not a Kubernetes quantity; write e.g. 10Gi or 500Mi",
                a.storage
            );
        }
        if let Some(class) = &a.storage_class
            && San::parse(class).is_err()
        {
            bail!("--storage-class {class:?} is not a valid name");
        }
        let token = a
            .initial_cluster_token
            .clone()
            .unwrap_or_else(|| format!("{}-{}", a.name, a.namespace));
        if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c == ',') {
            bail!("--initial-cluster-token must be non-empty, without spaces or commas");
        }
        Ok((
            Spec {
                name: a.name.clone(),
                namespace: a.namespace.clone(),
                replicas: a.replicas,
                image: a.image.clone(),
                storage: a.storage.clone(),
                storage_class: a.storage_class.clone(),
                domain: a.cluster_domain.to_ascii_lowercase(),
                token,
                state: a.initial_cluster_state,
                anti_affinity: a.anti_affinity,
            },
            warnings,
        ))
    }

    /// The members' names, NAME-0 … NAME-(replicas-1).
    fn members(&self) -> Vec<String> {
        (0..self.replicas)
            .map(|i| format!("{}-{i}", self.name))
            .collect()
    }

    /// The headless Service: the members' DNS names live under it.
    fn headless_service(&self) -> &str {
        &self.name
    }

    fn client_service(&self) -> String {
        format!("{}-client", self.name)
    }

    /// The stable DNS name of pod `pod`, as the headless Service publishes it.
    fn pod_host(&self, pod: &str) -> String {
        format!(
            "{pod}.{}.{}.svc.{}",
            self.headless_service(),
            self.namespace,
            self.domain
        )
    }

    fn secret_name(pod: &str) -> String {
        format!("{pod}-tls")
    }

    /// `--initial-cluster`: exactly the StatefulSet's members, each at its peer URL.
    fn initial_cluster(&self) -> String {
        self.members()
            .iter()
            .map(|pod| format!("{pod}=https://{}:{PEER_PORT}", self.pod_host(pod)))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn labels(&self) -> Value {
        json!({
            "app.kubernetes.io/name": "rampart",
            "app.kubernetes.io/instance": self.name,
        })
    }

    fn metadata(&self, name: &str) -> Value {
        json!({ "name": name, "namespace": self.namespace, "labels": self.labels() })
    }

    /// The command line that prints these manifests again (without --pki-dir).
    fn command_line(&self) -> String {
        let mut line = format!(
            "rampart k8s manifests --name {} --namespace {} --replicas {} --image {} --storage {} --cluster-domain {}",
            self.name, self.namespace, self.replicas, self.image, self.storage, self.domain
        );
        if let Some(class) = &self.storage_class {
            let _ = write!(line, " --storage-class {class}");
        }
        if self.token != format!("{}-{}", self.name, self.namespace) {
            let _ = write!(line, " --initial-cluster-token {}", self.token);
        }
        if self.state == ClusterState::Existing {
            line.push_str(" --initial-cluster-state existing");
        }
        if self.anti_affinity == AntiAffinity::Required {
            line.push_str(" --anti-affinity required");
        }
        line
    }

    /// How to make the PKI and the Secrets these manifests expect.
    fn pki_steps(&self) -> Vec<String> {
        let dir = format!("./{}-pki", self.name);
        let first = match self.state {
            ClusterState::New => format!(
                "rampart pki init --dir {dir} --k8s-statefulset {} --k8s-service {} --k8s-namespace {} --replicas {} --cluster-domain {}",
                self.name,
                self.headless_service(),
                self.namespace,
                self.replicas,
                self.domain
            ),
            // The cluster's CA stays: only the added members need certificates.
            ClusterState::Existing => format!(
                "for each pod added with `rampart member add`: rampart pki issue member POD --dir {dir} \
                 --dns POD.{svc}.{ns}.svc.{domain} --dns {svc}-client.{ns}.svc.{domain} --dns localhost --ip 127.0.0.1",
                svc = self.headless_service(),
                ns = self.namespace,
                domain = self.domain
            ),
        };
        let mut steps = vec![
            first,
            format!(
                "{} --pki-dir {dir} | kubectl apply -f -",
                self.command_line()
            ),
            "or, to apply these manifests as they are, create the Secrets first:".to_owned(),
        ];
        for pod in self.members() {
            steps.push(format!(
                "kubectl -n {} create secret generic {} --type=kubernetes.io/tls \
                 --from-file={SECRET_CERT}={dir}/members/{pod}.crt --from-file={SECRET_KEY}={dir}/members/{pod}.key \
                 --from-file={SECRET_CA}={dir}/ca.crt --from-file={SECRET_CRL}={dir}/crl.pem",
                self.namespace,
                Spec::secret_name(&pod)
            ));
        }
        steps
    }
}

/// A Kubernetes quantity as volumes take it: digits, an optional fraction, an optional suffix.
fn is_quantity(text: &str) -> bool {
    const SUFFIXES: [&str; 12] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E",
    ];
    let number = SUFFIXES
        .iter()
        .find_map(|s| text.strip_suffix(s))
        .unwrap_or(text);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, "0"));
    !whole.is_empty()
        && whole.chars().all(|c| c.is_ascii_digit())
        && !fraction.is_empty()
        && fraction.chars().all(|c| c.is_ascii_digit())
        && number.chars().any(|c| c != '0' && c != '.')
}

/// One member's Secret contents, read from a PKI directory.
#[derive(Debug, Clone)]
pub(crate) struct MemberFiles {
    pod: String,
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
    crl: Vec<u8>,
}

/// Reads the Secrets' contents from `dir`, refusing a PKI made for another StatefulSet:
/// every member NAME-0 … NAME-(N-1) must be there (and no NAME-N or beyond), valid, with the
/// DNS name its peers dial. Warnings (for stderr) are returned beside.
fn read_members(dir: &Path, spec: &Spec) -> anyhow::Result<(Vec<MemberFiles>, Vec<String>)> {
    let layout = PkiLayout::new(dir);
    let trust = Trust::load(&layout)
        .with_context(|| format!("{} is not a rampart PKI directory", dir.display()))?;
    let present: BTreeSet<String> = pki::current_certificates(&layout)?
        .into_iter()
        .filter(|c| c.kind == Some(Kind::Member))
        .map(|c| c.common_name)
        .collect();
    let wanted = spec.members();
    let remake = format!(
        "make it with `rampart pki init --dir DIR --k8s-statefulset {} --k8s-service {} --k8s-namespace {} --replicas {} --cluster-domain {}`",
        spec.name,
        spec.headless_service(),
        spec.namespace,
        spec.replicas,
        spec.domain
    );
    let missing: Vec<&String> = wanted.iter().filter(|m| !present.contains(*m)).collect();
    if !missing.is_empty() {
        bail!(
            "the PKI in {} has no certificate for {} (its members: {}); it was not made for StatefulSet {} with {} replicas: {remake}",
            dir.display(),
            missing
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            if present.is_empty() {
                "none".to_owned()
            } else {
                present.iter().cloned().collect::<Vec<_>>().join(", ")
            },
            spec.name,
            spec.replicas
        );
    }
    let prefix = format!("{}-", spec.name);
    let beyond: Vec<&String> = present
        .iter()
        .filter(|m| {
            m.strip_prefix(&prefix).is_some_and(|i| {
                i.chars().all(|c| c.is_ascii_digit())
                    && i.parse::<u32>().is_ok_and(|i| i >= spec.replicas)
            })
        })
        .collect();
    if !beyond.is_empty() {
        bail!(
            "the PKI in {} also has {}: it was made for more than {} replica(s); pass the --replicas it was made for",
            dir.display(),
            beyond
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            spec.replicas
        );
    }

    let ca = pki::files::read(&layout.ca_cert())?;
    let crl = pki::files::read(&layout.crl())?;
    let now = pki::now_unix();
    let client_host = format!(
        "{}.{}.svc.{}",
        spec.client_service(),
        spec.namespace,
        spec.domain
    );
    let mut warnings = Vec::new();
    let mut out = Vec::new();
    for pod in wanted {
        let cert_path = layout.cert(Kind::Member, &pod);
        let info = CertInfo::from_pem_file(&cert_path)?;
        let host = spec.pod_host(&pod);
        if !info.sans.contains(&San::Dns(host.clone())) {
            let sans: Vec<String> = info.sans.iter().map(ToString::to_string).collect();
            bail!(
                "{} does not name {host}, the address its peers dial (its SANs: {}); the PKI was made for another \
                 service, namespace or cluster domain: {remake}",
                cert_path.display(),
                sans.join(", ")
            );
        }
        let problems = pki::verify(&info, &trust, now);
        if !problems.is_empty() {
            bail!(
                "{} would be refused: {}; renew it with `rampart pki renew {pod} --dir {}`",
                cert_path.display(),
                problems
                    .iter()
                    .map(pki::Problem::explain)
                    .collect::<Vec<_>>()
                    .join("; "),
                dir.display()
            );
        }
        if !info.sans.contains(&San::Dns(client_host.clone())) {
            warnings.push(format!(
                "{} does not name {client_host}: clients of the {} Service must verify another name \
                 (reissue it with `rampart pki renew {pod} --dir {}` after adding the name, or connect through the members' names)",
                cert_path.display(),
                spec.client_service(),
                dir.display()
            ));
        }
        let key = pki::files::read_private_key(&layout.key(Kind::Member, &pod))?;
        out.push(MemberFiles {
            cert: pki::files::read(&cert_path)?,
            key,
            ca: ca.clone(),
            crl: crl.clone(),
            pod,
        });
    }
    Ok((out, warnings))
}

/// The manifests, in the order `kubectl apply` should create them.
pub(crate) fn manifests(spec: &Spec, secrets: &[MemberFiles]) -> Vec<Value> {
    let mut docs: Vec<Value> = secrets.iter().map(|m| secret(spec, m)).collect();
    docs.push(headless_service(spec));
    docs.push(client_service(spec));
    docs.push(disruption_budget(spec));
    docs.push(statefulset(spec));
    docs
}

fn secret(spec: &Spec, member: &MemberFiles) -> Value {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": spec.metadata(&Spec::secret_name(&member.pod)),
        "type": "kubernetes.io/tls",
        "data": {
            SECRET_CERT: b64(&member.cert),
            SECRET_KEY: b64(&member.key),
            SECRET_CA: b64(&member.ca),
            SECRET_CRL: b64(&member.crl),
        },
    })
}

fn port(name: &str, number: u16) -> Value {
    json!({ "name": name, "port": number, "targetPort": name, "protocol": "TCP" })
}

fn headless_service(spec: &Spec) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": spec.metadata(spec.headless_service()),
        "spec": {
            "clusterIP": "None",
            // Members must find each other before any is ready: readiness needs a leader,
            // and electing one needs the peers' addresses.
            "publishNotReadyAddresses": true,
            "selector": spec.labels(),
            "ports": [port("client", CLIENT_PORT), port("peer", PEER_PORT)],
        },
    })
}

fn client_service(spec: &Spec) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": spec.metadata(&spec.client_service()),
        "spec": {
            "type": "ClusterIP",
            "selector": spec.labels(),
            "ports": [port("client", CLIENT_PORT)],
        },
    })
}

fn disruption_budget(spec: &Spec) -> Value {
    json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": spec.metadata(&spec.name),
        "spec": {
            // One member at a time, whatever the size: a drain never takes the quorum, and
            // leaves the margin for an unplanned failure during it.
            "maxUnavailable": 1,
            "selector": { "matchLabels": spec.labels() },
        },
    })
}

/// `rampart probe CHECK` with this pod's member certificate (name from RAMPART_NAME).
fn probe(check: &str, period_secs: u32, failures: u32) -> Value {
    json!({
        "exec": { "command": ["rampart", "probe", check, "--pki-dir", PKI_MOUNT, "--timeout", "4s"] },
        "periodSeconds": period_secs,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    })
}

fn container_security() -> Value {
    json!({
        "runAsNonRoot": true,
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "capabilities": { "drop": ["ALL"] },
    })
}

fn statefulset(spec: &Spec) -> Value {
    let own_host = format!(
        "$(POD_NAME).{}.{}.svc.{}",
        spec.headless_service(),
        spec.namespace,
        spec.domain
    );
    let args = vec![
        "--name=$(POD_NAME)".to_owned(),
        format!("--data-dir={DATA_MOUNT}/data"),
        format!("--pki-dir={PKI_MOUNT}"),
        format!("--listen-client-urls=https://0.0.0.0:{CLIENT_PORT}"),
        format!("--advertise-client-urls=https://{own_host}:{CLIENT_PORT}"),
        format!("--listen-peer-urls=https://0.0.0.0:{PEER_PORT}"),
        format!("--initial-advertise-peer-urls=https://{own_host}:{PEER_PORT}"),
        format!("--initial-cluster={}", spec.initial_cluster()),
        format!("--initial-cluster-state={}", spec.state.as_str()),
        format!("--initial-cluster-token={}", spec.token),
    ];
    let env = json!([
        { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
        // For `rampart probe` and `rampart k8s member-pki`: exec probes expand no $(VAR).
        { "name": "RAMPART_NAME", "value": "$(POD_NAME)" },
    ]);
    let sources: Vec<Value> = spec
        .members()
        .iter()
        .map(|pod| {
            let items: Vec<Value> = [SECRET_CERT, SECRET_KEY, SECRET_CA, SECRET_CRL]
                .iter()
                .map(|key| json!({ "key": key, "path": format!("{pod}/{key}") }))
                .collect();
            json!({ "secret": { "name": Spec::secret_name(pod), "items": items } })
        })
        .collect();
    let term = json!({
        "labelSelector": { "matchLabels": spec.labels() },
        "topologyKey": "kubernetes.io/hostname",
    });
    let anti_affinity = match spec.anti_affinity {
        AntiAffinity::Preferred => json!({
            "preferredDuringSchedulingIgnoredDuringExecution": [
                { "weight": 100, "podAffinityTerm": term }
            ]
        }),
        AntiAffinity::Required => json!({
            "requiredDuringSchedulingIgnoredDuringExecution": [term]
        }),
    };
    let mut claim_spec = json!({
        "accessModes": ["ReadWriteOnce"],
        "resources": { "requests": { "storage": spec.storage } },
    });
    if let (Some(class), Some(map)) = (&spec.storage_class, claim_spec.as_object_mut()) {
        map.insert("storageClassName".into(), json!(class));
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": spec.metadata(&spec.name),
        "spec": {
            "serviceName": spec.headless_service(),
            "replicas": spec.replicas,
            // All members start at once: each waits for a quorum before it is ready, so
            // OrderedReady would wait forever for member 0 to become ready alone.
            "podManagementPolicy": "Parallel",
            "updateStrategy": { "type": "RollingUpdate" },
            "selector": { "matchLabels": spec.labels() },
            "template": {
                "metadata": { "labels": spec.labels() },
                "spec": {
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": RUN_AS,
                        "runAsGroup": RUN_AS,
                        "fsGroup": RUN_AS,
                        "seccompProfile": { "type": "RuntimeDefault" },
                    },
                    "affinity": { "podAntiAffinity": anti_affinity },
                    "initContainers": [{
                        "name": "member-pki",
                        "image": spec.image,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["rampart", "k8s", "member-pki"],
                        "args": [
                            "--name=$(POD_NAME)",
                            format!("--secrets-dir={SECRETS_MOUNT}"),
                            format!("--out={PKI_MOUNT}"),
                        ],
                        "env": env,
                        "securityContext": container_security(),
                        "volumeMounts": [
                            { "name": "member-secrets", "mountPath": SECRETS_MOUNT, "readOnly": true },
                            { "name": "pki", "mountPath": PKI_MOUNT },
                        ],
                    }],
                    "containers": [{
                        "name": "rampart",
                        "image": spec.image,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["rampart", "serve"],
                        "args": args,
                        "env": env,
                        "ports": [
                            { "name": "client", "containerPort": CLIENT_PORT, "protocol": "TCP" },
                            { "name": "peer", "containerPort": PEER_PORT, "protocol": "TCP" },
                        ],
                        // The client port opens once a leader is known: give a starting member
                        // up to 5 minutes to find its quorum before liveness applies.
                        "startupProbe": probe("livez", 5, 60),
                        "livenessProbe": probe("livez", 10, 3),
                        "readinessProbe": probe("readyz", 5, 3),
                        "resources": { "requests": { "cpu": "100m", "memory": "256Mi" } },
                        "securityContext": container_security(),
                        "volumeMounts": [
                            { "name": "pki", "mountPath": PKI_MOUNT, "readOnly": true },
                            { "name": "data", "mountPath": DATA_MOUNT },
                        ],
                    }],
                    "volumes": [
                        {
                            "name": "member-secrets",
                            // Group-readable for fsGroup; only the init container mounts it.
                            "projected": { "defaultMode": 0o440, "sources": sources },
                        },
                        { "name": "pki", "emptyDir": { "medium": "Memory", "sizeLimit": "1Mi" } },
                    ],
                },
            },
            "volumeClaimTemplates": [{
                "metadata": { "name": "data", "labels": spec.labels() },
                "spec": claim_spec,
            }],
        },
    })
}

/// The documents as one YAML stream, after a comment header.
fn render(spec: &Spec, docs: &[Value], with_keys: bool) -> anyhow::Result<String> {
    let mut out = format!(
        "# rampart on Kubernetes: StatefulSet {} in namespace {}, {} member(s).\n\
         # Made by: {}\n",
        spec.name,
        spec.namespace,
        spec.replicas,
        spec.command_line()
    );
    if with_keys {
        out.push_str(
            "# This output holds the members' private keys: apply it, do not keep or commit it.\n",
        );
    } else {
        out.push_str(
            "# The member Secrets are not included. To make the PKI and apply everything:\n",
        );
        for step in spec.pki_steps() {
            let _ = writeln!(out, "#   {step}");
        }
    }
    for doc in docs {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(doc).context("writing YAML")?);
    }
    Ok(out)
}

fn run_manifests(args: &ManifestsArgs) -> Result<(), CliError> {
    let (spec, mut warnings) =
        Spec::from_args(args).map_err(|e| CliError::with_code(exit::BAD_ARGS, e))?;
    let secrets = match &args.pki_dir {
        Some(dir) => {
            let (files, more) = read_members(dir, &spec)
                .map_err(|e| CliError::with_code(exit::INVALID_INPUT, e))?;
            warnings.extend(more);
            files
        }
        None => {
            warnings.push(format!(
                "the Secrets {} are not in this output; the comment at its top shows how to make them (or pass --pki-dir)",
                spec.members()
                    .iter()
                    .map(|p| Spec::secret_name(p))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            Vec::new()
        }
    };
    let text = render(&spec, &manifests(&spec, &secrets), args.pki_dir.is_some())?;
    for w in warnings {
        eprintln!("Warning: {w}");
    }
    print!("{text}");
    Ok(())
}

/// Copies member `name`'s files from `secrets_dir/name/` into a PKI directory at `out`.
fn member_pki(args: &MemberPkiArgs) -> anyhow::Result<()> {
    validate_name("member", &args.name)?;
    let from = args.secrets_dir.join(&args.name);
    let read = |key: &str| {
        let path = from.join(key);
        std::fs::read(&path).with_context(|| {
            format!(
                "reading {}: is the Secret {} there and listed in the StatefulSet's member-secrets volume?",
                path.display(),
                Spec::secret_name(&args.name)
            )
        })
    };
    let (cert, key, ca, crl) = (
        read(SECRET_CERT)?,
        read(SECRET_KEY)?,
        read(SECRET_CA)?,
        read(SECRET_CRL)?,
    );
    let cert_path = from.join(SECRET_CERT);
    let der = pki::parse_cert_pem(&cert, &cert_path)?;
    let info = CertInfo::from_der(der, &cert_path)?;
    let named = info.parsed_identity().filter(|id| id.kind == Kind::Member);
    if named.as_ref().map(|id| id.name.as_str()) != Some(args.name.as_str()) {
        bail!(
            "{} is not the member certificate of {} (it names {}); check the Secret {}",
            cert_path.display(),
            args.name,
            named.map_or_else(|| "no member".to_owned(), |id| id.name),
            Spec::secret_name(&args.name)
        );
    }
    let layout = PkiLayout::new(&args.out);
    let members = layout.kind_dir(Kind::Member);
    std::fs::create_dir_all(&members).with_context(|| format!("creating {}", members.display()))?;
    use pki::files::{PRIVATE_FILE_MODE, PUBLIC_FILE_MODE, write_atomic};
    write_atomic(&layout.ca_cert(), &ca, PUBLIC_FILE_MODE)?;
    write_atomic(&layout.crl(), &crl, PUBLIC_FILE_MODE)?;
    write_atomic(
        &layout.cert(Kind::Member, &args.name),
        &cert,
        PUBLIC_FILE_MODE,
    )?;
    write_atomic(
        &layout.key(Kind::Member, &args.name),
        &key,
        PRIVATE_FILE_MODE,
    )?;
    println!(
        "Wrote the PKI of member {} to {} (serial {})",
        args.name,
        args.out.display(),
        info.serial
    );
    Ok(())
}

pub(crate) fn run(cmd: K8sCommand) -> Result<(), CliError> {
    match cmd {
        K8sCommand::Manifests(args) => run_manifests(&args),
        K8sCommand::MemberPki(args) => Ok(member_pki(&args)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(replicas: u32) -> ManifestsArgs {
        ManifestsArgs {
            name: "etcd".into(),
            namespace: "db".into(),
            replicas,
            image: "rampart:test".into(),
            storage: "10Gi".into(),
            storage_class: None,
            cluster_domain: "cluster.local".into(),
            initial_cluster_token: None,
            initial_cluster_state: ClusterState::New,
            anti_affinity: AntiAffinity::Preferred,
            pki_dir: None,
        }
    }

    #[test]
    fn initial_cluster_lists_exactly_the_statefulsets_members() {
        for n in [1, 3, 5, 7] {
            let (spec, _) = Spec::from_args(&args(n)).unwrap();
            let cluster = spec.initial_cluster();
            let entries: Vec<&str> = cluster.split(',').collect();
            assert_eq!(entries.len(), n as usize, "{cluster}");
            for (i, entry) in entries.iter().enumerate() {
                assert_eq!(
                    *entry,
                    format!("etcd-{i}=https://etcd-{i}.etcd.db.svc.cluster.local:2380")
                );
            }
            assert!(!cluster.contains(&format!("etcd-{n}=")), "{cluster}");
        }
    }

    #[test]
    fn bad_requests_are_refused_and_even_sizes_warned() {
        let refused = |tweak: fn(&mut ManifestsArgs)| {
            let mut a = args(3);
            tweak(&mut a);
            Spec::from_args(&a).unwrap_err().to_string()
        };
        assert!(refused(|a| a.replicas = 0).contains("at least 1"));
        assert!(refused(|a| a.replicas = 9).contains("at most 7"));
        assert!(refused(|a| a.name = "Etcd".into()).contains("invalid StatefulSet name"));
        assert!(refused(|a| a.name = "a".repeat(53)).contains("at most 52"));
        assert!(refused(|a| a.namespace = "kube_system".into()).contains("namespace"));
        assert!(refused(|a| a.cluster_domain = "10.0.0.1".into()).contains("DNS domain"));
        assert!(refused(|a| a.storage = "10 GB".into()).contains("quantity"));
        assert!(refused(|a| a.image = "".into()).contains("image"));
        let (_, warnings) = Spec::from_args(&args(4)).unwrap();
        assert!(warnings[0].contains("even"), "{warnings:?}");
        assert!(Spec::from_args(&args(3)).unwrap().1.is_empty());
    }

    #[test]
    fn quantities_are_checked() {
        for good in ["10Gi", "500Mi", "1", "1.5Gi", "2G"] {
            assert!(is_quantity(good), "{good}");
        }
        for bad in ["", "Gi", "10 Gi", "10GB", "-1Gi", "0", "1.Gi", "0Gi"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn the_member_container_mounts_no_secret() {
        let (spec, _) = Spec::from_args(&args(3)).unwrap();
        let sts = statefulset(&spec);
        let pod = &sts["spec"]["template"]["spec"];
        let mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
        assert!(mounts.iter().all(|m| m["name"] != "member-secrets"));
        let init_mounts = pod["initContainers"][0]["volumeMounts"].as_array().unwrap();
        assert!(init_mounts.iter().any(|m| m["name"] == "member-secrets"));
        let sources = pod["volumes"][0]["projected"]["sources"]
            .as_array()
            .unwrap();
        assert_eq!(sources.len(), 3);
        assert_eq!(sources[2]["secret"]["name"], "etcd-2-tls");
    }
}

//! Tests over a PKI minted per test by `pki init`, plus certificates it would not issue.

mod material;

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType};

use super::*;
use crate::pki::{self, InitOptions, Kind, PkiLayout, files};

/// A PKI made by `pki init` in a temp dir, with its CA key loaded to mint odd certificates.
pub(super) struct TestPki {
    _dir: tempfile::TempDir,
    pub layout: PkiLayout,
    pub cluster: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestPki {
    /// Members rampart-0..2 (SANs localhost, 127.0.0.1, ::1) and client `root`.
    pub fn new(cluster: &str) -> TestPki {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("pki");
        pki::init(&InitOptions {
            dir: root.clone(),
            cluster: cluster.into(),
            members: pki::local_members().unwrap(),
            clients: vec!["root".into()],
            validity_days: None,
            ca_validity_days: None,
            force: false,
        })
        .unwrap();
        let layout = PkiLayout::new(root);
        let (_, ca_der) = pki::read_ca_cert(&layout).unwrap();
        let key_pem = String::from_utf8(files::read(&layout.ca_key()).unwrap()).unwrap();
        let issuer =
            Issuer::from_ca_cert_der(&ca_der, KeyPair::from_pem(&key_pem).unwrap()).unwrap();
        TestPki {
            _dir: dir,
            layout,
            cluster: cluster.into(),
            issuer,
        }
    }

    pub fn files(&self, kind: Kind, name: &str) -> TlsFiles {
        TlsFiles::from_pki(&self.layout, kind, name)
    }

    pub fn material(&self, kind: Kind, name: &str) -> Material {
        Material::load(&self.files(kind, name)).unwrap()
    }

    /// A certificate `pki` would not issue, signed by this CA. Before `tweak`: CN = `name`,
    /// URI SAN `spiffe://<cluster>/user/<name>`, clientAuth, valid from yesterday for 30 days.
    pub fn mint(&self, name: &str, tweak: impl FnOnce(&mut CertificateParams)) -> TlsFiles {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(30);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let uri = format!("spiffe://{}/user/{name}", self.cluster);
        params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        tweak(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let dir = self.layout.root().join("minted");
        if !dir.exists() {
            files::create_private_dir(&dir).unwrap();
        }
        let cert_path = dir.join(format!("{name}.crt"));
        let key_path = dir.join(format!("{name}.key"));
        files::write_atomic(&cert_path, cert.pem().as_bytes(), files::PUBLIC_FILE_MODE).unwrap();
        files::write_atomic(
            &key_path,
            key.serialize_pem().as_bytes(),
            files::PRIVATE_FILE_MODE,
        )
        .unwrap();
        TlsFiles {
            cert: cert_path,
            key: key_path,
            ca: self.layout.ca_cert(),
            crl: Some(self.layout.crl()),
        }
    }
}

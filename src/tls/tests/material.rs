//! Loading material: each refusal names the file and the fix.

use std::os::unix::fs::PermissionsExt;

use super::*;

#[test]
fn a_key_readable_by_others_is_refused_with_the_chmod_fix() {
    let pki = TestPki::new("prod");
    let files = pki.files(Kind::Member, "rampart-0");
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Material::load(&files).unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "key file {} is readable by others (mode 0644); run chmod 600 on it",
            files.key.display()
        )),
        "{err}"
    );
}

#[test]
fn a_key_of_another_certificate_is_refused() {
    let pki = TestPki::new("prod");
    let mut files = pki.files(Kind::Client, "root");
    files.key = pki.files(Kind::Member, "rampart-0").key;
    let err = Material::load(&files).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
    assert!(
        err.to_string().contains("does not belong to certificate"),
        "{err}"
    );
}

#[test]
fn a_crl_of_another_ca_is_refused_at_load_time() {
    let pki = TestPki::new("prod");
    let other = TestPki::new("prod");
    let mut files = pki.files(Kind::Member, "rampart-0");
    files.crl = Some(other.layout.crl());
    let err = Material::load(&files).unwrap_err().to_string();
    assert!(err.contains("not signed by the CA we trust"), "{err}");
}

#[test]
fn files_without_pem_say_what_to_pass() {
    let pki = TestPki::new("prod");
    let mut files = pki.files(Kind::Member, "rampart-0");
    files.ca = files.key.clone();
    let err = Material::load(&files).unwrap_err().to_string();
    assert!(
        err.contains("no PEM certificate found; pass the cluster's ca.crt"),
        "{err}"
    );
    // Nothing of the key leaks into the message.
    assert!(!err.contains("PRIVATE"), "{err}");

    let mut files = pki.files(Kind::Member, "rampart-0");
    files.key = pki.layout.crl();
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = Material::load(&files).unwrap_err().to_string();
    assert!(err.contains("no PEM private key found"), "{err}");
}

#[test]
fn own_identity_is_parsed_and_member_use_is_checked() {
    let pki = TestPki::new("prod");
    let member = pki.material(Kind::Member, "rampart-0");
    assert_eq!(member.member_name("prod").unwrap(), "rampart-0");
    assert_eq!(
        member.identity().unwrap().to_string(),
        "spiffe://prod/member/rampart-0"
    );
    assert_eq!(member.roots().len(), 1);
    assert_eq!(member.crls().len(), 1);

    let err = member.member_name("staging").unwrap_err().to_string();
    assert!(
        err.contains("not a member certificate of cluster \"staging\""),
        "{err}"
    );

    let root = pki.material(Kind::Client, "root");
    let err = root.member_name("prod").unwrap_err().to_string();
    assert!(
        err.contains(&format!("cert {} is not", root.files().cert.display())),
        "{err}"
    );
    assert!(
        err.contains("its identity is spiffe://prod/user/root"),
        "{err}"
    );
    assert!(!format!("{root:?}").contains("PRIVATE"));
}

#[test]
fn a_member_name_is_refused_for_an_unusable_identity() {
    let pki = TestPki::new("prod");
    let files = pki.mint("m0", |p| {
        p.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://prod/members/m0".try_into().unwrap(),
        )];
    });
    let material = Material::load(&files).unwrap();
    assert!(material.identity().is_none());
    let err = material.member_name("prod").unwrap_err().to_string();
    assert!(
        err.contains(
            "its identity is unusable: malformed identity URI \"spiffe://prod/members/m0\""
        ),
        "{err}"
    );
}

#[test]
fn a_server_without_a_crl_is_refused() {
    let pki = TestPki::new("prod");
    let mut files = pki.files(Kind::Member, "rampart-0");
    files.crl = None;
    let material = Material::load(&files).unwrap();
    let err = server_config(&material, ClientPolicy::AnyClient).unwrap_err();
    assert!(matches!(err, TlsError::MissingCrl), "{err:?}");
    // Dialing out without a CRL is allowed.
    client_config(&material).unwrap();
}

#[test]
fn configs_are_tls13_only_with_alpn_h2_and_no_resumption() {
    let pki = TestPki::new("prod");
    let material = pki.material(Kind::Member, "rampart-0");
    // The client port also speaks HTTP/1.1 (etcd's /health ...); the peer port only gRPC.
    for (policy, alpn) in [
        (
            ClientPolicy::AnyClient,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        ),
        (
            ClientPolicy::MembersOf {
                cluster: "prod".into(),
            },
            vec![b"h2".to_vec()],
        ),
    ] {
        let server = server_config(&material, policy).unwrap();
        assert_eq!(server.alpn_protocols, alpn);
        assert_eq!(server.send_tls13_tickets, 0);
    }
    let client = client_config(&material).unwrap();
    assert_eq!(client.alpn_protocols, vec![b"h2".to_vec()]);
    let bad = server_config(
        &material,
        ClientPolicy::MembersOf {
            cluster: "Not A Name".into(),
        },
    );
    assert!(bad.is_err());
}

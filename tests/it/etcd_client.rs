//! A second client stack: the `etcd-client` crate (tonic + rustls), with a rampart client
//! certificate, doing what applications do.

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, SortOrder,
    SortTarget, TlsOptions, Txn, TxnOp,
};

use crate::harness::{Member, TestPki};

/// An etcd-client connected to `member` as client `root`.
pub async fn connect(pki: &TestPki, member: &Member) -> Client {
    let read = |p: &str| std::fs::read(pki.dir.join(p)).unwrap();
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt")))
        .identity(Identity::from_pem(
            read("clients/root.crt"),
            read("clients/root.key"),
        ));
    Client::connect(
        [member.client_url.as_str()],
        Some(ConnectOptions::new().with_tls(tls)),
    )
    .await
    .expect("etcd-client connects over mutual TLS")
}

#[test]
fn the_etcd_client_crate_reads_writes_and_transacts() {
    let pki = TestPki::init(&[]);
    let member = Member::start(&pki, "rampart-0");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = connect(&pki, &member).await;
        for (k, v) in [
            ("app/a", "1"),
            ("app/b", "2"),
            ("app/c", "3"),
            ("other", "x"),
        ] {
            c.put(k, v, None).await.unwrap();
        }
        let resp = c
            .get(
                "app/",
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_sort(SortTarget::Key, SortOrder::Descend)
                        .with_limit(2),
                ),
            )
            .await
            .unwrap();
        let keys: Vec<&str> = resp.kvs().iter().map(|kv| kv.key_str().unwrap()).collect();
        assert_eq!(keys, ["app/c", "app/b"]);
        assert_eq!(resp.count(), 3);
        assert!(resp.more());

        // Optimistic concurrency, the way applications use Txn.
        let a = c.get("app/a", None).await.unwrap();
        let rev = a.kvs()[0].mod_revision();
        let txn = Txn::new()
            .when([Compare::mod_revision("app/a", CompareOp::Equal, rev)])
            .and_then([TxnOp::put("app/a", "10", None)])
            .or_else([TxnOp::get("app/a", None)]);
        assert!(c.txn(txn.clone()).await.unwrap().succeeded());
        assert!(
            !c.txn(txn).await.unwrap().succeeded(),
            "the stale revision now fails the compare"
        );

        let deleted = c
            .delete(
                "app/",
                Some(etcd_client::DeleteOptions::new().with_prefix()),
            )
            .await
            .unwrap();
        assert_eq!(deleted.deleted(), 3);

        let status = c.status().await.unwrap();
        assert_eq!(status.leader(), status.header().unwrap().member_id());
        let hash = c.hash_kv(0).await.unwrap();
        assert_ne!(hash.hash(), 0);

        let current = c
            .get("other", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        c.compact(current, None).await.unwrap();
        let err = c
            .get("other", Some(GetOptions::new().with_revision(current - 1)))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("required revision has been compacted"),
            "{err}"
        );
    });
}

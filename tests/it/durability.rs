//! Crash durability: a stream of puts, SIGKILL at a random moment, restart. Every acknowledged
//! put is there, and revisions continue without a gap or a repeat.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rampart::api::proto::etcdserverpb as pb;
use rampart::api::proto::etcdserverpb::kv_client::KvClient;
use rampart::pki::{Kind, PkiLayout};
use rampart::tls::{Material, TlsFiles};

use crate::harness::{Member, TestPki};

fn client_config(pki: &TestPki) -> Arc<rustls::ClientConfig> {
    let files = TlsFiles::from_pki(&PkiLayout::new(&pki.dir), Kind::Client, "root");
    rampart::tls::client_config(&Material::load(&files).expect("client material"))
        .expect("client config")
}

async fn kv(
    member: &Member,
    config: Arc<rustls::ClientConfig>,
) -> KvClient<tonic::transport::Channel> {
    KvClient::new(
        rampart::tls::connect_channel(&member.client_url, config)
            .await
            .expect("connect"),
    )
}

#[test]
fn acknowledged_puts_survive_kill_9_and_revisions_continue() {
    let pki = TestPki::init(&[]);
    let mut member = Member::start(&pki, "rampart-0");
    let config = client_config(&pki);
    let rt = tokio::runtime::Runtime::new().unwrap();
    // (key index, revision) of every acknowledged put, across all rounds.
    let acked: Arc<Mutex<Vec<(u64, i64)>>> = Arc::default();
    let mut next_key = 0u64;

    for (round, kill_after_ms) in [0u64, 300, 900].into_iter().enumerate() {
        let stop = rt.block_on(async {
            let writers: Vec<_> = (0..4)
                .map(|w| {
                    let acked = acked.clone();
                    let config = config.clone();
                    let url = member.client_url.clone();
                    let base = next_key + w * 1_000_000;
                    tokio::spawn(async move {
                        let Ok(channel) = rampart::tls::connect_channel(&url, config).await else {
                            return;
                        };
                        let mut kv = KvClient::new(channel);
                        for i in base.. {
                            let put = pb::PutRequest {
                                key: format!("key-{i:012}").into_bytes(),
                                value: b"v".to_vec(),
                                ..Default::default()
                            };
                            match tokio::time::timeout(Duration::from_secs(5), kv.put(put)).await {
                                Ok(Ok(resp)) => {
                                    let rev =
                                        resp.into_inner().header.map(|h| h.revision).unwrap_or(0);
                                    acked.lock().unwrap().push((i, rev));
                                }
                                _ => return,
                            }
                        }
                    })
                })
                .collect();
            // Let the stream get going (bounded, for loaded machines), then kill mid-stream.
            let before = acked.lock().unwrap().len();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while acked.lock().unwrap().len() < before + 20
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(kill_after_ms)).await;
            writers
        });
        member.kill();
        rt.block_on(async {
            for w in stop {
                let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
            }
        });
        next_key += 10_000_000;
        member.start_again();

        let acked_now = acked.lock().unwrap().clone();
        assert!(
            !acked_now.is_empty(),
            "round {round}: no put was acknowledged before the kill"
        );
        let mut kv = rt.block_on(kv(&member, config.clone()));
        let all = rt
            .block_on(kv.range(pb::RangeRequest {
                key: vec![0],
                range_end: vec![0],
                ..Default::default()
            }))
            .expect("range after restart")
            .into_inner();
        let present: std::collections::HashMap<Vec<u8>, i64> = all
            .kvs
            .iter()
            .map(|kv| (kv.key.clone(), kv.mod_revision))
            .collect();
        for (i, rev) in &acked_now {
            let key = format!("key-{i:012}").into_bytes();
            assert_eq!(
                present.get(&key),
                Some(rev),
                "round {round}: acknowledged put key-{i} (revision {rev}) lost or changed"
            );
        }
        // Every put wrote a distinct key once, so the revisions present are exactly 2..=N+1.
        let mut revisions: Vec<i64> = present.values().copied().collect();
        revisions.sort_unstable();
        let expected: Vec<i64> = (2..2 + revisions.len() as i64).collect();
        assert_eq!(
            revisions, expected,
            "round {round}: revisions have a gap or a repeat"
        );
        // And the next write takes the next revision.
        let next = rt
            .block_on(kv.put(pb::PutRequest {
                key: format!("after-{round}").into_bytes(),
                value: b"x".to_vec(),
                ..Default::default()
            }))
            .unwrap()
            .into_inner();
        let current = revisions.last().copied().unwrap_or(1);
        assert_eq!(
            next.header.unwrap().revision,
            current + 1,
            "round {round}: revision did not continue"
        );
    }
}

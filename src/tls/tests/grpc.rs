//! A real tonic server over [`TlsIncoming`] and a real tonic client over [`connect_channel`]:
//! ALPN h2 end to end, and the caller's identity reaching the handler.

use tonic::{Request, Response, Status};

use super::*;
use crate::api::proto::v3lockpb::lock_client::LockClient;
use crate::api::proto::v3lockpb::lock_server::{Lock, LockServer};
use crate::api::proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};

/// Answers `Lock` with the caller as the key: proves `PeerInfo` reaches handlers.
struct WhoAmI;

#[tonic::async_trait]
impl Lock for WhoAmI {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let info = request
            .extensions()
            .get::<PeerInfo>()
            .ok_or_else(|| Status::internal("no PeerInfo in the request"))?;
        let caller = info
            .caller
            .as_ref()
            .ok_or_else(|| Status::permission_denied("no identity"))?;
        Ok(Response::new(LockResponse {
            header: None,
            key: caller.to_string().into_bytes(),
        }))
    }

    async fn unlock(
        &self,
        _request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        Err(Status::unimplemented("test service"))
    }
}

async fn serve(material: &Material, policy: ClientPolicy) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_config, config_rx) = watch::channel(server_config(material, policy).unwrap());
    let incoming = TlsIncoming::new(listener, config_rx, "prod");
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(LockServer::new(WhoAmI))
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    (addr, server)
}

async fn who_am_i(channel: tonic::transport::Channel) -> Result<String, Status> {
    let response = LockClient::new(channel)
        .lock(LockRequest {
            name: b"x".to_vec(),
            lease: 0,
        })
        .await?;
    Ok(String::from_utf8(response.into_inner().key).unwrap())
}

#[tokio::test]
async fn a_grpc_call_over_our_tls_carries_the_caller_to_the_handler() {
    let pki = TestPki::new("prod");
    let (addr, server) = serve(
        &pki.material(Kind::Member, "rampart-0"),
        ClientPolicy::AnyClient,
    )
    .await;
    let root = client_config(&pki.material(Kind::Client, "root")).unwrap();

    // By IP, with the scheme, and by DNS name, without: both verify the server's SANs.
    let channel = connect_channel(&format!("https://{addr}"), root.clone())
        .await
        .unwrap();
    assert_eq!(who_am_i(channel).await.unwrap(), "user root");
    let channel = connect_channel(&format!("localhost:{}", addr.port()), root)
        .await
        .unwrap();
    assert_eq!(who_am_i(channel.clone()).await.unwrap(), "user root");
    // The channel is reused for further calls.
    assert_eq!(who_am_i(channel).await.unwrap(), "user root");

    let member = client_config(&pki.material(Kind::Member, "rampart-1")).unwrap();
    let channel = lazy_channel(&format!("https://{addr}"), member).unwrap();
    assert_eq!(who_am_i(channel).await.unwrap(), "member rampart-1");
    server.abort();
}

#[tokio::test]
async fn a_grpc_client_the_server_refuses_gets_no_answer() {
    let pki = TestPki::new("prod");
    let other = TestPki::new("prod");
    let (addr, server) = serve(
        &pki.material(Kind::Member, "rampart-0"),
        ClientPolicy::MembersOf {
            cluster: "prod".into(),
        },
    )
    .await;
    for files in [
        pki.files(Kind::Client, "root"),
        pki.trusted_by(other.files(Kind::Member, "rampart-1")),
    ] {
        let config = client_config(&Material::load(&files).unwrap()).unwrap();
        // TLS 1.3: the refusal may surface at connect time or on the first call.
        let result = match connect_channel(&format!("https://{addr}"), config).await {
            Ok(channel) => who_am_i(channel).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        assert!(result.is_err(), "{files:?} got in: {result:?}");
    }
    let member = client_config(&pki.material(Kind::Member, "rampart-2")).unwrap();
    let channel = connect_channel(&format!("https://{addr}"), member)
        .await
        .unwrap();
    assert_eq!(who_am_i(channel).await.unwrap(), "member rampart-2");
    server.abort();
}

#[tokio::test]
async fn a_client_refuses_a_server_whose_certificate_does_not_name_it() {
    let pki = TestPki::new("prod");
    // A client certificate names no host (no DNS/IP SANs) and lacks serverAuth.
    let (addr, server) = serve(&pki.material(Kind::Client, "root"), ClientPolicy::AnyClient).await;
    let member = client_config(&pki.material(Kind::Member, "rampart-1")).unwrap();
    let err = connect_channel(&format!("https://{addr}"), member)
        .await
        .unwrap_err();
    assert!(matches!(err, TlsError::Connect { .. }), "{err:?}");
    server.abort();
}

#[tokio::test]
async fn endpoints_must_be_https_with_a_port() {
    let pki = TestPki::new("prod");
    let config = client_config(&pki.material(Kind::Client, "root")).unwrap();
    for (endpoint, words) in [
        ("http://127.0.0.1:2379", "use https://127.0.0.1:2379"),
        ("unix:///tmp/sock", "must be https://"),
        ("https://127.0.0.1", "no port"),
        ("https://:2379", "no host"),
    ] {
        let err = lazy_channel(endpoint, config.clone())
            .unwrap_err()
            .to_string();
        assert!(err.contains(words), "{endpoint}: {err}");
    }
}

//! `grpc_server_started_total` and `grpc_server_handled_total` for the client port, labelled
//! as go-grpc-prometheus labels them (etcd's dashboards query these names).
//!
//! Only the API's own methods get their own label values: a path a client makes up is
//! counted as `unknown`, so that nobody can grow the metric set without bound.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::http::{HeaderMap, Request, Response};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::metrics::{GrpcHandledLabels, GrpcLabels};

/// (service, method, grpc_type) of every method the client port serves.
const METHODS: &[(&str, &str, &str)] = &[
    ("etcdserverpb.KV", "Range", "unary"),
    ("etcdserverpb.KV", "Put", "unary"),
    ("etcdserverpb.KV", "DeleteRange", "unary"),
    ("etcdserverpb.KV", "Txn", "unary"),
    ("etcdserverpb.KV", "Compact", "unary"),
    ("etcdserverpb.Watch", "Watch", "bidi_stream"),
    ("etcdserverpb.Lease", "LeaseGrant", "unary"),
    ("etcdserverpb.Lease", "LeaseRevoke", "unary"),
    ("etcdserverpb.Lease", "LeaseKeepAlive", "bidi_stream"),
    ("etcdserverpb.Lease", "LeaseTimeToLive", "unary"),
    ("etcdserverpb.Lease", "LeaseLeases", "unary"),
    ("etcdserverpb.Cluster", "MemberAdd", "unary"),
    ("etcdserverpb.Cluster", "MemberRemove", "unary"),
    ("etcdserverpb.Cluster", "MemberUpdate", "unary"),
    ("etcdserverpb.Cluster", "MemberList", "unary"),
    ("etcdserverpb.Cluster", "MemberPromote", "unary"),
    ("etcdserverpb.Maintenance", "Alarm", "unary"),
    ("etcdserverpb.Maintenance", "Status", "unary"),
    ("etcdserverpb.Maintenance", "Defragment", "unary"),
    ("etcdserverpb.Maintenance", "Hash", "unary"),
    ("etcdserverpb.Maintenance", "HashKV", "unary"),
    ("etcdserverpb.Maintenance", "Snapshot", "server_stream"),
    ("etcdserverpb.Maintenance", "MoveLeader", "unary"),
    ("etcdserverpb.Maintenance", "Downgrade", "unary"),
    ("etcdserverpb.Auth", "AuthEnable", "unary"),
    ("etcdserverpb.Auth", "AuthDisable", "unary"),
    ("etcdserverpb.Auth", "AuthStatus", "unary"),
    ("etcdserverpb.Auth", "Authenticate", "unary"),
    ("etcdserverpb.Auth", "UserAdd", "unary"),
    ("etcdserverpb.Auth", "UserGet", "unary"),
    ("etcdserverpb.Auth", "UserList", "unary"),
    ("etcdserverpb.Auth", "UserDelete", "unary"),
    ("etcdserverpb.Auth", "UserChangePassword", "unary"),
    ("etcdserverpb.Auth", "UserGrantRole", "unary"),
    ("etcdserverpb.Auth", "UserRevokeRole", "unary"),
    ("etcdserverpb.Auth", "RoleAdd", "unary"),
    ("etcdserverpb.Auth", "RoleGet", "unary"),
    ("etcdserverpb.Auth", "RoleList", "unary"),
    ("etcdserverpb.Auth", "RoleDelete", "unary"),
    ("etcdserverpb.Auth", "RoleGrantPermission", "unary"),
    ("etcdserverpb.Auth", "RoleRevokePermission", "unary"),
    ("v3lockpb.Lock", "Lock", "unary"),
    ("v3lockpb.Lock", "Unlock", "unary"),
    ("v3electionpb.Election", "Campaign", "unary"),
    ("v3electionpb.Election", "Proclaim", "unary"),
    ("v3electionpb.Election", "Leader", "unary"),
    ("v3electionpb.Election", "Observe", "server_stream"),
    ("v3electionpb.Election", "Resign", "unary"),
];

/// The labels of a request path (`/etcdserverpb.KV/Range`), or `None` for a non-gRPC request
/// (the HTTP endpoints beside gRPC).
fn labels_of<B>(request: &Request<B>) -> Option<GrpcLabels> {
    let is_grpc = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if !is_grpc {
        return None;
    }
    let path = request.uri().path();
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    Some(
        METHODS
            .iter()
            .find(|(s, m, _)| *s == service && *m == method)
            .map(|(s, m, t)| GrpcLabels {
                grpc_type: t,
                grpc_service: s,
                grpc_method: m,
            })
            .unwrap_or(GrpcLabels {
                grpc_type: "unknown",
                grpc_service: "unknown",
                grpc_method: "unknown",
            }),
    )
}

/// The name go-grpc-prometheus gives a status code.
fn code_name(code: &[u8]) -> &'static str {
    match code {
        b"0" => "OK",
        b"1" => "Canceled",
        b"2" => "Unknown",
        b"3" => "InvalidArgument",
        b"4" => "DeadlineExceeded",
        b"5" => "NotFound",
        b"6" => "AlreadyExists",
        b"7" => "PermissionDenied",
        b"8" => "ResourceExhausted",
        b"9" => "FailedPrecondition",
        b"10" => "Aborted",
        b"11" => "OutOfRange",
        b"12" => "Unimplemented",
        b"13" => "Internal",
        b"14" => "Unavailable",
        b"15" => "DataLoss",
        b"16" => "Unauthenticated",
        _ => "Unknown",
    }
}

fn status_in(headers: &HeaderMap) -> Option<&'static str> {
    headers.get("grpc-status").map(|v| code_name(v.as_bytes()))
}

fn handled(labels: &GrpcLabels, code: &'static str) {
    crate::metrics::get()
        .grpc_handled
        .get_or_create(&GrpcHandledLabels {
            grpc_type: labels.grpc_type,
            grpc_service: labels.grpc_service,
            grpc_method: labels.grpc_method,
            grpc_code: code,
        })
        .inc();
}

/// Wraps the client port's routes with the gRPC counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcMetricsLayer;

impl<S> tower_layer::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner }
    }
}

/// See [`GrpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for GrpcMetrics<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<CountedBody<ResBody>>;
    type Error = S::Error;
    type Future = CountedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let labels = labels_of(&request);
        if let Some(labels) = &labels {
            crate::metrics::get()
                .grpc_started
                .get_or_create(labels)
                .inc();
        }
        CountedFuture {
            inner: self.inner.call(request),
            labels,
        }
    }
}

pin_project! {
    /// The response future: hands the labels on to the body, which sees the final status.
    pub struct CountedFuture<F> {
        #[pin]
        inner: F,
        labels: Option<GrpcLabels>,
    }
}

impl<F, B, E> std::future::Future for CountedFuture<F>
where
    F: std::future::Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<CountedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match ready!(this.inner.poll(cx)) {
            Ok(response) => response,
            Err(e) => {
                if let Some(labels) = this.labels.take() {
                    handled(&labels, "Unavailable");
                }
                return Poll::Ready(Err(e));
            }
        };
        let mut labels = this.labels.take();
        // A trailers-only response (most errors) carries its status in the headers.
        if let Some(code) = status_in(response.headers())
            && let Some(l) = labels.take()
        {
            handled(&l, code);
        }
        Poll::Ready(Ok(response.map(|inner| CountedBody { inner, labels })))
    }
}

pin_project! {
    /// A response body that counts its call as handled when the trailers pass (or, if the
    /// client goes away first, as `Canceled`).
    pub struct CountedBody<B> {
        #[pin]
        inner: B,
        labels: Option<GrpcLabels>,
    }

    impl<B> PinnedDrop for CountedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(labels) = this.project().labels.take() {
                handled(&labels, "Canceled");
            }
        }
    }
}

impl<B: Body<Data = Bytes>> Body for CountedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(f)) = &frame
            && let Some(trailers) = f.trailers_ref()
            && let Some(labels) = this.labels.take()
        {
            handled(&labels, status_in(trailers).unwrap_or("OK"));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grpc(path: &str) -> Request<()> {
        Request::builder()
            .uri(path)
            .header("content-type", "application/grpc")
            .body(())
            .expect("request")
    }

    #[test]
    fn known_methods_keep_their_names_and_made_up_ones_do_not() {
        let l = labels_of(&grpc("/etcdserverpb.KV/Range")).expect("grpc");
        assert_eq!(
            (l.grpc_service, l.grpc_method, l.grpc_type),
            ("etcdserverpb.KV", "Range", "unary")
        );
        let w = labels_of(&grpc("/etcdserverpb.Watch/Watch")).expect("grpc");
        assert_eq!(w.grpc_type, "bidi_stream");
        let made_up = labels_of(&grpc("/etcdserverpb.KV/Whatever123")).expect("grpc");
        assert_eq!(made_up.grpc_method, "unknown");
        let http = Request::builder()
            .uri("/metrics")
            .body(())
            .expect("request");
        assert!(labels_of(&http).is_none());
        assert_eq!(code_name(b"7"), "PermissionDenied");
        assert_eq!(code_name(b"99"), "Unknown");
    }
}

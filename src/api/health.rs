//! etcd's HTTP endpoints beside gRPC on the client port (mutual TLS like everything else):
//! `/livez` (the process answers), `/readyz` and `/health` (a leader is known and no alarm is
//! raised), `/version`.

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::core::{API_VERSION, Core};

/// Why the member is not ready, in etcd's words; `None` when it is.
fn not_ready(core: &Core) -> Option<&'static str> {
    if core.node.status().leader.is_none() {
        return Some("RAFT NO LEADER");
    }
    if core.nospace() {
        return Some("ALARM NOSPACE");
    }
    None
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// The routes, for the client port's router.
pub fn routes(core: Arc<Core>) -> Router {
    let (ready_core, health_core) = (core.clone(), core);
    Router::new()
        .route(
            "/livez",
            get(|| async { text(StatusCode::OK, "ok\n".into()) }),
        )
        .route(
            "/readyz",
            get(move || {
                let core = ready_core.clone();
                async move {
                    match not_ready(&core) {
                        None => text(StatusCode::OK, "ok\n".into()),
                        Some(reason) => text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("[-]{reason}\nreadyz check failed\n"),
                        ),
                    }
                }
            }),
        )
        .route(
            "/health",
            get(move || {
                let core = health_core.clone();
                async move {
                    match not_ready(&core) {
                        None => json(StatusCode::OK, r#"{"health":"true","reason":""}"#.into()),
                        Some(reason) => json(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!(r#"{{"health":"false","reason":"{reason}"}}"#),
                        ),
                    }
                }
            }),
        )
        .route(
            "/version",
            get(|| async {
                json(
                    StatusCode::OK,
                    format!(r#"{{"etcdserver":"{API_VERSION}","etcdcluster":"{API_VERSION}"}}"#),
                )
            }),
        )
}

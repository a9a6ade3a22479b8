//! etcd's HTTP endpoints beside gRPC on the client port (mutual TLS like everything else):
//! `/livez` (the process answers), `/readyz` and `/health` (a leader is known and no alarm is
//! raised), `/version`, and `/metrics` for Prometheus.

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

/// Sets the metrics that are state rather than events from the member as it is now.
fn refresh_metrics(core: &Core) {
    let m = crate::metrics::get();
    let status = core.node.status();
    m.has_leader.set(i64::from(status.leader.is_some()));
    m.is_leader.set(i64::from(status.leader == Some(status.id)));
    m.is_learner.set(i64::from(status.is_learner));
    m.proposals_committed.set(status.committed_index as i64);
    m.proposals_applied.set(status.applied_index as i64);
    let store = core.node.store();
    m.current_revision.set(store.current_revision());
    m.compact_revision.set(store.compacted_revision());
    m.db_total_size.set(core.db_size());
    m.db_in_use_size.set(core.db_size_in_use());
    m.quota_backend_bytes
        .set(i64::try_from(core.limits.quota_backend_bytes).unwrap_or(i64::MAX));
    m.leases.set(core.node.lessor().len() as i64);
}

/// Records the member's constant facts (ID, versions) in the metrics.
pub fn describe_member(core: &Core) {
    let m = crate::metrics::get();
    m.server_id
        .get_or_create(&crate::metrics::ServerIdLabels {
            server_id: format!("{:x}", core.member_id),
        })
        .set(1);
    m.server_version
        .get_or_create(&crate::metrics::ServerVersionLabels {
            server_version: API_VERSION,
        })
        .set(1);
    m.cluster_version
        .get_or_create(&crate::metrics::ClusterVersionLabels {
            cluster_version: CLUSTER_VERSION,
        })
        .set(1);
}

/// The cluster version etcd reports for a 3.5 cluster (major.minor).
const CLUSTER_VERSION: &str = "3.5";

/// The routes, for the client port's router.
pub fn routes(core: Arc<Core>) -> Router {
    let (ready_core, health_core, metrics_core) = (core.clone(), core.clone(), core);
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let core = metrics_core.clone();
                async move {
                    refresh_metrics(&core);
                    (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
                        crate::metrics::get().encode(),
                    )
                        .into_response()
                }
            }),
        )
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

//! Services whose features come in later releases: registered, so clients get a clear
//! `UNIMPLEMENTED` naming the feature instead of an anonymous unknown-service error — and never a
//! fake success.

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::proto::etcdserverpb as pb;
use super::status::not_yet;

/// A boxed response stream.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// An impl whose unary methods answer "not implemented yet: FEATURE"; `extra` holds the
/// associated types and streaming methods, written out. One macro emits the whole impl so
/// that `async_trait` sees every method.
macro_rules! pending_service {
    ($service:ty: $trait:path, $feature:expr, { $($extra:tt)* }, $($method:ident($req:ty) -> $resp:ty;)*) => {
        #[tonic::async_trait]
        impl $trait for $service {
            $($extra)*
            $(
                async fn $method(&self, _request: Request<$req>) -> Result<Response<$resp>, Status> {
                    Err(not_yet($feature))
                }
            )*
        }
    };
}

/// The Auth service (RBAC is a later feature; the certificate already identifies callers).
#[derive(Debug, Default, Clone)]
pub struct PendingAuth;

pending_service! { PendingAuth: pb::auth_server::Auth, "the Auth API (users, roles, permissions)", {},
        auth_enable(pb::AuthEnableRequest) -> pb::AuthEnableResponse;
        auth_disable(pb::AuthDisableRequest) -> pb::AuthDisableResponse;
        auth_status(pb::AuthStatusRequest) -> pb::AuthStatusResponse;
        authenticate(pb::AuthenticateRequest) -> pb::AuthenticateResponse;
        user_add(pb::AuthUserAddRequest) -> pb::AuthUserAddResponse;
        user_get(pb::AuthUserGetRequest) -> pb::AuthUserGetResponse;
        user_list(pb::AuthUserListRequest) -> pb::AuthUserListResponse;
        user_delete(pb::AuthUserDeleteRequest) -> pb::AuthUserDeleteResponse;
        user_change_password(pb::AuthUserChangePasswordRequest) -> pb::AuthUserChangePasswordResponse;
        user_grant_role(pb::AuthUserGrantRoleRequest) -> pb::AuthUserGrantRoleResponse;
        user_revoke_role(pb::AuthUserRevokeRoleRequest) -> pb::AuthUserRevokeRoleResponse;
        role_add(pb::AuthRoleAddRequest) -> pb::AuthRoleAddResponse;
        role_get(pb::AuthRoleGetRequest) -> pb::AuthRoleGetResponse;
        role_list(pb::AuthRoleListRequest) -> pb::AuthRoleListResponse;
        role_delete(pb::AuthRoleDeleteRequest) -> pb::AuthRoleDeleteResponse;
        role_grant_permission(pb::AuthRoleGrantPermissionRequest) -> pb::AuthRoleGrantPermissionResponse;
        role_revoke_permission(pb::AuthRoleRevokePermissionRequest) -> pb::AuthRoleRevokePermissionResponse;
}

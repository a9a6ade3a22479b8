//! The Auth service: users, roles and permissions, replicated through raft, with etcd's rules
//! and error texts.
//!
//! The login is the client certificate: Authenticate and passwords are refused with a message
//! that says so (a password would be a second, weaker credential beside the certificate).
//! Changes and listings are for root once auth is on; a user may read its own entry and its
//! own roles. Headers carry the auth revision, as etcd's auth responses do.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::authz::{Requester, auth_status};
use super::core::{Core, raft_status};
use super::kv::rejection_status;
use super::proto::authpb;
use super::proto::etcdserverpb as pb;
use crate::auth::{AuthCommand, AuthError, AuthView, PermKind, Permission, ROOT};
use crate::raft::StateResult;

/// etcd's Auth service over a member's [`Core`].
#[derive(Clone)]
pub struct AuthService {
    core: Arc<Core>,
}

impl AuthService {
    /// The service.
    pub fn new(core: Arc<Core>) -> AuthService {
        AuthService { core }
    }

    fn header(&self, auth_revision: u64) -> pb::ResponseHeader {
        self.core
            .header(i64::try_from(auth_revision).unwrap_or(i64::MAX))
    }

    /// Root-only (while auth is on): proposes `cmd` and answers with the new auth revision.
    async fn change<T>(
        &self,
        request: &Request<T>,
        cmd: AuthCommand,
    ) -> Result<pb::ResponseHeader, Status> {
        self.core.refuse_on_learner()?;
        // Not guarded by the auth revision (as etcd): root cannot lose its role while auth is
        // on, and concurrent changes by root must not refuse each other.
        self.core.authorize_admin(&Requester::of(request))?;
        let cmd = crate::raft::StateCommand::Auth(cmd);
        match self.core.node.propose(&cmd).await.map_err(raft_status)? {
            StateResult::Auth(Ok(answer)) => Ok(self.header(answer.revision)),
            StateResult::Auth(Err(e)) => Err(auth_status(e)),
            StateResult::Rejected(r) => Err(rejection_status(r)),
            _ => Err(Status::internal(
                "etcdserver: unexpected state machine answer",
            )),
        }
    }

    /// The auth state after a linearizable barrier, if `check` passes for the requester.
    async fn read<T>(
        &self,
        request: &Request<T>,
        check: impl FnOnce(&AuthView, Option<&str>) -> Result<(), AuthError>,
    ) -> Result<Arc<AuthView>, Status> {
        self.core.node.linearize().await.map_err(raft_status)?;
        // The answer comes from the very state the check passed on.
        Ok(self
            .core
            .authorize(&Requester::of(request), check)?
            .into_view())
    }
}

/// Root, or the user asking about itself.
fn admin_or_self(v: &AuthView, user: Option<&str>, name: &str) -> Result<(), AuthError> {
    if user == Some(name) {
        return Ok(());
    }
    v.admin(user)
}

fn perm_kind(t: i32) -> PermKind {
    match authpb::permission::Type::try_from(t) {
        Ok(authpb::permission::Type::Write) => PermKind::Write,
        Ok(authpb::permission::Type::Readwrite) => PermKind::ReadWrite,
        _ => PermKind::Read,
    }
}

fn perm_type(k: PermKind) -> i32 {
    (match k {
        PermKind::Read => authpb::permission::Type::Read,
        PermKind::Write => authpb::permission::Type::Write,
        PermKind::ReadWrite => authpb::permission::Type::Readwrite,
    }) as i32
}

#[tonic::async_trait]
impl pb::auth_server::Auth for AuthService {
    async fn auth_enable(
        &self,
        request: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        let header = self.change(&request, AuthCommand::Enable).await?;
        tracing::info!("auth enabled: requests are now checked against users' roles");
        Ok(Response::new(pb::AuthEnableResponse {
            header: Some(header),
        }))
    }

    async fn auth_disable(
        &self,
        request: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        let header = self.change(&request, AuthCommand::Disable).await?;
        tracing::warn!("auth disabled: every client certificate of the cluster may do anything");
        Ok(Response::new(pb::AuthDisableResponse {
            header: Some(header),
        }))
    }

    async fn auth_status(
        &self,
        request: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        let view = self.read(&request, |_, _| Ok(())).await?;
        let state = view.state();
        Ok(Response::new(pb::AuthStatusResponse {
            header: Some(self.header(state.revision)),
            enabled: state.enabled,
            auth_revision: state.revision,
        }))
    }

    async fn authenticate(
        &self,
        _request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        Err(auth_status(AuthError::PasswordsRefused))
    }

    async fn user_add(
        &self,
        request: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        let r = request.get_ref();
        let no_password = r.options.as_ref().is_some_and(|o| o.no_password);
        if (!no_password && !r.password.is_empty()) || !r.hashed_password.is_empty() {
            return Err(auth_status(AuthError::PasswordsRefused));
        }
        let cmd = AuthCommand::UserAdd {
            name: r.name.clone(),
        };
        let header = self.change(&request, cmd).await?;
        Ok(Response::new(pb::AuthUserAddResponse {
            header: Some(header),
        }))
    }

    async fn user_get(
        &self,
        request: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        let name = request.get_ref().name.clone();
        let view = self
            .read(&request, |v, u| admin_or_self(v, u, &name))
            .await?;
        let state = view.state();
        let user = state
            .users
            .get(&name)
            .ok_or_else(|| auth_status(AuthError::UserNotFound))?;
        Ok(Response::new(pb::AuthUserGetResponse {
            header: Some(self.header(state.revision)),
            roles: user.roles.iter().cloned().collect(),
        }))
    }

    async fn user_list(
        &self,
        request: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        let view = self.read(&request, |v, u| v.admin(u)).await?;
        let state = view.state();
        Ok(Response::new(pb::AuthUserListResponse {
            header: Some(self.header(state.revision)),
            users: state.users.keys().cloned().collect(),
        }))
    }

    async fn user_delete(
        &self,
        request: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        let name = request.get_ref().name.clone();
        let header = self
            .change(&request, AuthCommand::UserDelete { name })
            .await?;
        Ok(Response::new(pb::AuthUserDeleteResponse {
            header: Some(header),
        }))
    }

    async fn user_change_password(
        &self,
        _request: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        Err(auth_status(AuthError::PasswordsRefused))
    }

    async fn user_grant_role(
        &self,
        request: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        let r = request.get_ref();
        let cmd = AuthCommand::UserGrantRole {
            user: r.user.clone(),
            role: r.role.clone(),
        };
        let header = self.change(&request, cmd).await?;
        Ok(Response::new(pb::AuthUserGrantRoleResponse {
            header: Some(header),
        }))
    }

    async fn user_revoke_role(
        &self,
        request: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        let r = request.get_ref();
        let cmd = AuthCommand::UserRevokeRole {
            user: r.name.clone(),
            role: r.role.clone(),
        };
        let header = self.change(&request, cmd).await?;
        Ok(Response::new(pb::AuthUserRevokeRoleResponse {
            header: Some(header),
        }))
    }

    async fn role_add(
        &self,
        request: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        let name = request.get_ref().name.clone();
        let header = self.change(&request, AuthCommand::RoleAdd { name }).await?;
        Ok(Response::new(pb::AuthRoleAddResponse {
            header: Some(header),
        }))
    }

    async fn role_get(
        &self,
        request: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        let name = request.get_ref().role.clone();
        let view = self
            .read(&request, |v, u| {
                // A user may read the roles it holds.
                let holds = u
                    .and_then(|u| v.state().users.get(u))
                    .is_some_and(|user| user.roles.contains(&name));
                if holds { Ok(()) } else { v.admin(u) }
            })
            .await?;
        let state = view.state();
        let perm = if name == ROOT {
            // Root may do everything: one read-write permission over every key, as etcd shows.
            vec![authpb::Permission {
                perm_type: perm_type(PermKind::ReadWrite),
                key: Vec::new(),
                range_end: vec![0],
            }]
        } else {
            let role = state
                .roles
                .get(&name)
                .ok_or_else(|| auth_status(AuthError::RoleNotFound))?;
            role.permissions
                .iter()
                .map(|p| authpb::Permission {
                    perm_type: perm_type(p.kind),
                    key: p.key.clone(),
                    range_end: p.range_end.clone(),
                })
                .collect()
        };
        Ok(Response::new(pb::AuthRoleGetResponse {
            header: Some(self.header(state.revision)),
            perm,
        }))
    }

    async fn role_list(
        &self,
        request: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        let view = self.read(&request, |v, u| v.admin(u)).await?;
        let state = view.state();
        Ok(Response::new(pb::AuthRoleListResponse {
            header: Some(self.header(state.revision)),
            roles: state.roles.keys().cloned().collect(),
        }))
    }

    async fn role_delete(
        &self,
        request: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        let name = request.get_ref().role.clone();
        let header = self
            .change(&request, AuthCommand::RoleDelete { name })
            .await?;
        Ok(Response::new(pb::AuthRoleDeleteResponse {
            header: Some(header),
        }))
    }

    async fn role_grant_permission(
        &self,
        request: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        let r = request.get_ref();
        let perm = r
            .perm
            .as_ref()
            .ok_or_else(|| auth_status(AuthError::PermissionNotGiven))?;
        let cmd = AuthCommand::RoleGrantPermission {
            role: r.name.clone(),
            permission: Permission {
                kind: perm_kind(perm.perm_type),
                key: perm.key.clone(),
                range_end: perm.range_end.clone(),
            },
        };
        let header = self.change(&request, cmd).await?;
        Ok(Response::new(pb::AuthRoleGrantPermissionResponse {
            header: Some(header),
        }))
    }

    async fn role_revoke_permission(
        &self,
        request: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        let r = request.get_ref();
        let cmd = AuthCommand::RoleRevokePermission {
            role: r.role.clone(),
            key: r.key.clone(),
            range_end: r.range_end.clone(),
        };
        let header = self.change(&request, cmd).await?;
        Ok(Response::new(pb::AuthRoleRevokePermissionResponse {
            header: Some(header),
        }))
    }
}

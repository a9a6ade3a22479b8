//! Who is asking, and whether they may: the bridge between a request's certificate identity
//! and the auth state.
//!
//! Handlers take the [`Requester`] before consuming the request (the identity lives in the
//! request's extensions), check with [`Core::authorize`], and wrap the command they propose
//! with [`Checked::guard`], so that the state machine refuses it if the permissions changed
//! in between.

use std::sync::Arc;

use tonic::{Code, Request, Status};

use super::core::Core;
use super::status::EtcdError;
use crate::auth::{AuthError, AuthView};
use crate::raft::StateCommand;
use crate::tls::{Caller, PeerInfo};

/// The user a request comes from: the user its client certificate names, or none (a member
/// certificate, which holds no user's permissions).
#[derive(Debug, Clone, Default)]
pub struct Requester {
    user: Option<String>,
}

impl Requester {
    /// The requester of `request`.
    pub fn of<T>(request: &Request<T>) -> Requester {
        let user = request
            .extensions()
            .get::<PeerInfo>()
            .and_then(|p| match &p.caller {
                Some(Caller::User(name)) => Some(name.clone()),
                _ => None,
            });
        Requester { user }
    }

    /// The user's name, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
}

/// A passed check, holding the auth state it was made against.
#[derive(Debug)]
pub struct Checked {
    view: Arc<AuthView>,
}

impl Checked {
    /// `cmd`, made conditional on the permissions being unchanged when it commits (only while
    /// auth is on: with auth off there is nothing to go stale).
    pub fn guard(&self, cmd: StateCommand) -> StateCommand {
        if !self.view.enabled() {
            return cmd;
        }
        StateCommand::Guarded {
            auth_revision: self.view.state().revision,
            command: Box::new(cmd),
        }
    }

    /// The state the check used.
    pub fn into_view(self) -> Arc<AuthView> {
        self.view
    }
}

impl Core {
    /// Runs `check` against the current auth state for `who`; a refusal becomes etcd's status.
    pub fn authorize(
        &self,
        who: &Requester,
        check: impl FnOnce(&AuthView, Option<&str>) -> Result<(), AuthError>,
    ) -> Result<Checked, Status> {
        let view = self.node.auth().view();
        match check(&view, who.user()) {
            Ok(()) => Ok(Checked { view }),
            Err(e) => {
                tracing::debug!(user = who.user().unwrap_or("-"), error = %e, "request refused by auth");
                Err(auth_status(e))
            }
        }
    }

    /// Allows only root (anyone while auth is off): membership, maintenance and auth changes.
    pub fn authorize_admin(&self, who: &Requester) -> Result<Checked, Status> {
        self.authorize(who, |v, u| v.admin(u))
    }
}

/// An auth refusal as etcd reports it (the codes are etcd's).
pub fn auth_status(e: AuthError) -> Status {
    use AuthError::*;
    let code = match e {
        PermissionDenied => return EtcdError::PermissionDenied.into(),
        UserEmpty | RoleEmpty | PermissionNotGiven | InvalidAuthMgmt | OldRevision
        | PasswordsRefused => Code::InvalidArgument,
        RootUserNotExist | RootRoleNotExist | UserAlreadyExist | UserNotFound
        | RoleAlreadyExist | RoleNotFound | RoleNotGranted | PermissionNotGranted => {
            Code::FailedPrecondition
        }
    };
    Status::new(code, e.to_string())
}

//! Users, roles and key-range permissions (etcd's auth store), and the checks made with them.
//!
//! The state is small and changes rarely, so it is one value: [`AuthState`], replicated through
//! raft as [`AuthCommand`]s and persisted whole after each change. Readers take an
//! [`AuthView`] — the state plus every user's permissions merged into disjoint intervals — from
//! the [`AuthStore`]; a check is then a lookup and a binary search, with no lock held.
//!
//! There are no passwords: the client certificate names the user, and the TLS handshake has
//! already proved it. A user is only a name and its roles.
//!
//! This module knows nothing of gRPC or raft: the API maps [`AuthError`] to etcd's statuses.

mod check;
mod state;

use std::sync::{Arc, RwLock};

pub use check::{Access, AuthView};
pub use state::{AuthAnswer, AuthCommand, AuthState, PermKind, Permission, Role, User};

/// The name of the role that may do everything, and of the user that must hold it before auth
/// can be enabled.
pub const ROOT: &str = "root";

/// Why an auth request was refused. The texts are etcd's (clients match on them), except
/// [`AuthError::PasswordsRefused`], which exists because rampart logs in by certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum AuthError {
    /// AuthEnable without a `root` user.
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    /// AuthEnable while `root` lacks the `root` role.
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    /// UserAdd with an empty name.
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    /// UserAdd of a name that exists.
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    /// A user that does not exist.
    #[error("etcdserver: user name not found")]
    UserNotFound,
    /// RoleAdd with an empty name.
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    /// RoleAdd of a name that exists.
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    /// A role that does not exist.
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    /// RevokeRole of a role the user does not have.
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    /// RevokePermission of a permission the role does not have.
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    /// GrantPermission without a permission.
    #[error("etcdserver: permission not given")]
    PermissionNotGiven,
    /// A change that would lock everyone out (removing root while auth is on) or an invalid
    /// permission range.
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    /// The caller may not do this.
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    /// The permissions changed between the check of a request and its commit: retry.
    #[error("etcdserver: revision of auth store is old")]
    OldRevision,
    /// A password was given: rampart users log in with their client certificate.
    #[error(
        "rampart does not accept passwords: a user logs in with a client certificate that names it (URI SAN spiffe://<cluster>/user/<name>, else CN); add users with --no-password and issue their certificate with `rampart pki issue client <name>`"
    )]
    PasswordsRefused,
}

/// The current auth state of a member, swapped as a whole when a change is applied.
#[derive(Debug)]
pub struct AuthStore {
    current: RwLock<Arc<AuthView>>,
}

impl AuthStore {
    /// A store holding `state`.
    pub fn new(state: AuthState) -> AuthStore {
        AuthStore {
            current: RwLock::new(Arc::new(AuthView::new(state))),
        }
    }

    /// The state to check requests against: cheap (an `Arc` clone), and it never changes under
    /// the caller.
    pub fn view(&self) -> Arc<AuthView> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether auth is enabled (the fast path of every request when it is not).
    pub fn enabled(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .state()
            .enabled
    }

    /// Replaces the state (after a change was applied, or a snapshot installed).
    pub fn replace(&self, state: AuthState) {
        let view = Arc::new(AuthView::new(state));
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = view;
    }
}

impl Default for AuthStore {
    fn default() -> AuthStore {
        AuthStore::new(AuthState::default())
    }
}

//! The replicated auth state and the changes applied to it, with etcd's rules.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{AuthError, ROOT};

/// What a permission allows (etcd's `authpb.Permission.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PermKind {
    /// Reads.
    Read,
    /// Writes.
    Write,
    /// Both.
    ReadWrite,
}

impl PermKind {
    /// Whether this kind allows reads.
    pub fn reads(self) -> bool {
        matches!(self, PermKind::Read | PermKind::ReadWrite)
    }

    /// Whether this kind allows writes.
    pub fn writes(self) -> bool {
        matches!(self, PermKind::Write | PermKind::ReadWrite)
    }
}

/// A permission on a key range, with etcd's conventions: `range_end` empty = the single key
/// `key`; `range_end == [0]` = every key from `key` on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    /// What it allows.
    pub kind: PermKind,
    /// The first key.
    pub key: Vec<u8>,
    /// The end of the range (exclusive), see above.
    pub range_end: Vec<u8>,
}

impl Permission {
    /// Whether the range names at least one key: a single non-empty key, or `key < range_end`
    /// (etcd refuses other ranges with "invalid auth management").
    pub fn is_valid_range(&self) -> bool {
        if self.range_end.is_empty() {
            return !self.key.is_empty();
        }
        self.range_end == [0] || self.key < self.range_end
    }
}

/// A user: a name (the map key) and its roles. No password: the certificate is the login.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The roles granted, sorted.
    pub roles: BTreeSet<String>,
}

/// A role: a name (the map key) and its permissions, sorted by key then range end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// The permissions.
    pub permissions: Vec<Permission>,
}

/// The whole auth state of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    /// Whether requests are checked.
    pub enabled: bool,
    /// Counts the changes (etcd's auth revision): reported by AuthStatus and in the headers of
    /// auth responses, and used to refuse writes checked against an older state.
    pub revision: u64,
    /// Users by name.
    pub users: BTreeMap<String, User>,
    /// Roles by name (`root` need not be listed: it is implicit, as in etcd).
    pub roles: BTreeMap<String, Role>,
}

/// A change to the auth state (one per Auth API call that writes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthCommand {
    /// Turn checks on (needs `root` with the `root` role).
    Enable,
    /// Turn checks off.
    Disable,
    /// Add a user.
    UserAdd {
        /// Its name.
        name: String,
    },
    /// Delete a user.
    UserDelete {
        /// Its name.
        name: String,
    },
    /// Grant a role to a user.
    UserGrantRole {
        /// The user.
        user: String,
        /// The role.
        role: String,
    },
    /// Revoke a role from a user.
    UserRevokeRole {
        /// The user.
        user: String,
        /// The role.
        role: String,
    },
    /// Add a role.
    RoleAdd {
        /// Its name.
        name: String,
    },
    /// Delete a role (and take it from every user).
    RoleDelete {
        /// Its name.
        name: String,
    },
    /// Grant a permission to a role (replacing the kind of one on the same range).
    RoleGrantPermission {
        /// The role.
        role: String,
        /// The permission.
        permission: Permission,
    },
    /// Revoke the permission on exactly this range from a role.
    RoleRevokePermission {
        /// The role.
        role: String,
        /// The first key.
        key: Vec<u8>,
        /// The range end.
        range_end: Vec<u8>,
    },
}

/// The answer to an applied [`AuthCommand`]: the auth revision after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthAnswer {
    /// The auth revision.
    pub revision: u64,
}

impl AuthState {
    /// Whether `user` exists and holds the `root` role.
    pub fn is_root(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.roles.contains(ROOT))
    }

    /// Applies `cmd` with etcd's rules. On error nothing changed; on success the revision moved
    /// on if anything changed.
    pub fn apply(&mut self, cmd: &AuthCommand) -> Result<AuthAnswer, AuthError> {
        let changed = self.change(cmd)?;
        if changed {
            self.revision += 1;
        }
        Ok(AuthAnswer {
            revision: self.revision,
        })
    }

    /// Makes the change; `Ok(false)` when it was already so (no new revision).
    fn change(&mut self, cmd: &AuthCommand) -> Result<bool, AuthError> {
        match cmd {
            AuthCommand::Enable => {
                if self.enabled {
                    return Ok(false);
                }
                if !self.users.contains_key(ROOT) {
                    return Err(AuthError::RootUserNotExist);
                }
                if !self.is_root(ROOT) {
                    return Err(AuthError::RootRoleNotExist);
                }
                self.enabled = true;
            }
            AuthCommand::Disable => {
                if !self.enabled {
                    return Ok(false);
                }
                self.enabled = false;
            }
            AuthCommand::UserAdd { name } => {
                if name.is_empty() {
                    return Err(AuthError::UserEmpty);
                }
                if self.users.contains_key(name) {
                    return Err(AuthError::UserAlreadyExist);
                }
                self.users.insert(name.clone(), User::default());
            }
            AuthCommand::UserDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                if self.users.remove(name).is_none() {
                    return Err(AuthError::UserNotFound);
                }
            }
            AuthCommand::UserGrantRole { user, role } => {
                if !self.users.contains_key(user) {
                    return Err(AuthError::UserNotFound);
                }
                if role != ROOT && !self.roles.contains_key(role) {
                    return Err(AuthError::RoleNotFound);
                }
                let Some(u) = self.users.get_mut(user) else {
                    return Err(AuthError::UserNotFound);
                };
                if !u.roles.insert(role.clone()) {
                    return Ok(false);
                }
            }
            AuthCommand::UserRevokeRole { user, role } => {
                if self.enabled && user == ROOT && role == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                let u = self.users.get_mut(user).ok_or(AuthError::UserNotFound)?;
                if !u.roles.remove(role) {
                    return Err(AuthError::RoleNotGranted);
                }
            }
            AuthCommand::RoleAdd { name } => {
                if name.is_empty() {
                    return Err(AuthError::RoleEmpty);
                }
                if self.roles.contains_key(name) {
                    return Err(AuthError::RoleAlreadyExist);
                }
                self.roles.insert(name.clone(), Role::default());
            }
            AuthCommand::RoleDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                if self.roles.remove(name).is_none() {
                    return Err(AuthError::RoleNotFound);
                }
                for user in self.users.values_mut() {
                    user.roles.remove(name);
                }
            }
            AuthCommand::RoleGrantPermission { role, permission } => {
                if !permission.is_valid_range() {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                let r = self.roles.get_mut(role).ok_or(AuthError::RoleNotFound)?;
                let same_range = |p: &Permission| {
                    (&p.key, &p.range_end) == (&permission.key, &permission.range_end)
                };
                match r.permissions.iter_mut().find(|p| same_range(p)) {
                    Some(p) if p.kind == permission.kind => return Ok(false),
                    Some(p) => p.kind = permission.kind,
                    None => {
                        r.permissions.push(permission.clone());
                        r.permissions
                            .sort_by(|a, b| (&a.key, &a.range_end).cmp(&(&b.key, &b.range_end)));
                    }
                }
            }
            AuthCommand::RoleRevokePermission {
                role,
                key,
                range_end,
            } => {
                let r = self.roles.get_mut(role).ok_or(AuthError::RoleNotFound)?;
                let before = r.permissions.len();
                r.permissions
                    .retain(|p| (&p.key, &p.range_end) != (key, range_end));
                if r.permissions.len() == before {
                    return Err(AuthError::PermissionNotGranted);
                }
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(state: &mut AuthState, cmd: AuthCommand) -> Result<u64, AuthError> {
        state.apply(&cmd).map(|a| a.revision)
    }

    fn user(name: &str) -> AuthCommand {
        AuthCommand::UserAdd { name: name.into() }
    }

    fn grant(user: &str, role: &str) -> AuthCommand {
        AuthCommand::UserGrantRole {
            user: user.into(),
            role: role.into(),
        }
    }

    #[test]
    fn enabling_needs_root_with_the_root_role_and_then_protects_it() {
        let mut s = AuthState::default();
        assert_eq!(
            apply(&mut s, AuthCommand::Enable),
            Err(AuthError::RootUserNotExist)
        );
        apply(&mut s, user("root")).unwrap();
        assert_eq!(
            apply(&mut s, AuthCommand::Enable),
            Err(AuthError::RootRoleNotExist)
        );
        // `root` is implicit: it can be granted without RoleAdd.
        apply(&mut s, grant("root", ROOT)).unwrap();
        let rev = apply(&mut s, AuthCommand::Enable).unwrap();
        assert!(s.enabled);
        assert_eq!(apply(&mut s, AuthCommand::Enable), Ok(rev), "no-op");
        assert_eq!(
            apply(
                &mut s,
                AuthCommand::UserDelete {
                    name: "root".into()
                }
            ),
            Err(AuthError::InvalidAuthMgmt)
        );
        assert_eq!(
            apply(
                &mut s,
                AuthCommand::UserRevokeRole {
                    user: "root".into(),
                    role: ROOT.into()
                }
            ),
            Err(AuthError::InvalidAuthMgmt)
        );
        apply(&mut s, AuthCommand::Disable).unwrap();
        apply(
            &mut s,
            AuthCommand::UserDelete {
                name: "root".into(),
            },
        )
        .unwrap();
    }

    #[test]
    fn users_and_roles_follow_etcds_rules() {
        let mut s = AuthState::default();
        assert_eq!(apply(&mut s, user("")), Err(AuthError::UserEmpty));
        apply(&mut s, user("alice")).unwrap();
        assert_eq!(
            apply(&mut s, user("alice")),
            Err(AuthError::UserAlreadyExist)
        );
        assert_eq!(
            apply(&mut s, grant("bob", "r")),
            Err(AuthError::UserNotFound)
        );
        assert_eq!(
            apply(&mut s, grant("alice", "r")),
            Err(AuthError::RoleNotFound)
        );
        apply(&mut s, AuthCommand::RoleAdd { name: "r".into() }).unwrap();
        assert_eq!(
            apply(&mut s, AuthCommand::RoleAdd { name: "r".into() }),
            Err(AuthError::RoleAlreadyExist)
        );
        let rev = apply(&mut s, grant("alice", "r")).unwrap();
        assert_eq!(
            apply(&mut s, grant("alice", "r")),
            Ok(rev),
            "granted twice: no-op"
        );
        apply(&mut s, AuthCommand::RoleDelete { name: "r".into() }).unwrap();
        assert!(
            s.users["alice"].roles.is_empty(),
            "deleting a role revokes it"
        );
        assert_eq!(
            apply(
                &mut s,
                AuthCommand::UserRevokeRole {
                    user: "alice".into(),
                    role: "r".into()
                }
            ),
            Err(AuthError::RoleNotGranted)
        );
    }

    #[test]
    fn permissions_merge_by_range_and_invalid_ranges_are_refused() {
        let mut s = AuthState::default();
        apply(&mut s, AuthCommand::RoleAdd { name: "r".into() }).unwrap();
        let perm = |kind, key: &[u8], end: &[u8]| AuthCommand::RoleGrantPermission {
            role: "r".into(),
            permission: Permission {
                kind,
                key: key.to_vec(),
                range_end: end.to_vec(),
            },
        };
        apply(&mut s, perm(PermKind::Read, b"b", b"c")).unwrap();
        apply(&mut s, perm(PermKind::Write, b"a", b"")).unwrap();
        apply(&mut s, perm(PermKind::ReadWrite, b"b", b"c")).unwrap();
        let kinds: Vec<_> = s.roles["r"]
            .permissions
            .iter()
            .map(|p| (p.key.clone(), p.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (b"a".to_vec(), PermKind::Write),
                (b"b".to_vec(), PermKind::ReadWrite)
            ]
        );
        assert_eq!(
            apply(&mut s, perm(PermKind::Read, b"z", b"a")),
            Err(AuthError::InvalidAuthMgmt)
        );
        assert_eq!(
            apply(&mut s, perm(PermKind::Read, b"", b"")),
            Err(AuthError::InvalidAuthMgmt)
        );
        apply(&mut s, perm(PermKind::Read, b"", &[0])).unwrap();
        assert_eq!(
            apply(
                &mut s,
                AuthCommand::RoleRevokePermission {
                    role: "r".into(),
                    key: b"q".to_vec(),
                    range_end: vec![]
                }
            ),
            Err(AuthError::PermissionNotGranted)
        );
    }
}

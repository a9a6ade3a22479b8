//! Permission checks: may this user read or write this key range, or run this transaction?
//!
//! Each user's permissions are merged, per access kind, into sorted disjoint intervals when the
//! state changes; a range is allowed when one merged interval covers all of it. A request is
//! checked as a whole before anything of it runs: every compare and every operation of both
//! branches of a transaction, nested transactions included — the branch taken depends on data,
//! so a denied operation in the branch not taken still denies the request.

use std::cmp::Ordering;
use std::collections::HashMap;

use super::state::AuthState;
use super::{AuthError, ROOT};
use crate::mvcc::{DeleteRangeRequest, Op, PutRequest, TxnRequest};

/// Reading or writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Range, compare, watch, a put's or delete's previous value.
    Read,
    /// Put, delete, lease revoke.
    Write,
}

/// The end of an interval: a key (exclusive) or past every key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    Key(Vec<u8>),
    Infinity,
}

impl PartialOrd for End {
    fn partial_cmp(&self, other: &End) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for End {
    fn cmp(&self, other: &End) -> Ordering {
        match (self, other) {
            (End::Infinity, End::Infinity) => Ordering::Equal,
            (End::Infinity, _) => Ordering::Greater,
            (_, End::Infinity) => Ordering::Less,
            (End::Key(a), End::Key(b)) => a.cmp(b),
        }
    }
}

/// `[key, range_end)` with etcd's conventions as an interval; `None` when it is empty.
fn interval(key: &[u8], range_end: &[u8]) -> Option<(Vec<u8>, End)> {
    if range_end.is_empty() {
        // The single key: [key, key + "\0").
        let mut end = key.to_vec();
        end.push(0);
        return Some((key.to_vec(), End::Key(end)));
    }
    if range_end == [0] {
        return Some((key.to_vec(), End::Infinity));
    }
    (key < range_end).then(|| (key.to_vec(), End::Key(range_end.to_vec())))
}

/// Sorted, disjoint, non-adjacent intervals.
#[derive(Debug, Default, Clone)]
struct Intervals(Vec<(Vec<u8>, End)>);

impl Intervals {
    fn merged(mut all: Vec<(Vec<u8>, End)>) -> Intervals {
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Vec<u8>, End)> = Vec::with_capacity(all.len());
        for (start, end) in all {
            if let Some(last) = out.last_mut() {
                let touches = match &last.1 {
                    End::Infinity => true,
                    End::Key(k) => start <= *k,
                };
                if touches {
                    if end > last.1 {
                        last.1 = end;
                    }
                    continue;
                }
            }
            out.push((start, end));
        }
        Intervals(out)
    }

    /// Whether one interval covers `[start, end)`.
    fn covers(&self, start: &[u8], end: &End) -> bool {
        // The last interval starting at or before `start` is the only candidate.
        let after = self.0.partition_point(|(s, _)| s.as_slice() <= start);
        after > 0 && self.0[after - 1].1 >= *end
    }
}

/// What one user may do.
#[derive(Debug, Default, Clone)]
struct UserPermissions {
    root: bool,
    read: Intervals,
    write: Intervals,
}

/// The auth state with every user's permissions merged, ready for checks.
#[derive(Debug, Default)]
pub struct AuthView {
    state: AuthState,
    users: HashMap<String, UserPermissions>,
}

impl AuthView {
    /// Merges the permissions of every user of `state`.
    pub fn new(state: AuthState) -> AuthView {
        let mut users = HashMap::with_capacity(state.users.len());
        for (name, user) in &state.users {
            let mut read = Vec::new();
            let mut write = Vec::new();
            for role in user.roles.iter().filter_map(|r| state.roles.get(r)) {
                for p in &role.permissions {
                    let Some(ivl) = interval(&p.key, &p.range_end) else {
                        continue;
                    };
                    if p.kind.reads() {
                        read.push(ivl.clone());
                    }
                    if p.kind.writes() {
                        write.push(ivl);
                    }
                }
            }
            users.insert(
                name.clone(),
                UserPermissions {
                    root: user.roles.contains(ROOT),
                    read: Intervals::merged(read),
                    write: Intervals::merged(write),
                },
            );
        }
        AuthView { state, users }
    }

    /// The state.
    pub fn state(&self) -> &AuthState {
        &self.state
    }

    /// Whether checks are on.
    pub fn enabled(&self) -> bool {
        self.state.enabled
    }

    /// Allows anything when auth is off; else only a `user` that holds the `root` role.
    /// `user` is `None` for a caller that is not a user (a member certificate).
    pub fn admin(&self, user: Option<&str>) -> Result<(), AuthError> {
        if !self.enabled() || user.is_some_and(|u| self.users.get(u).is_some_and(|p| p.root)) {
            return Ok(());
        }
        Err(AuthError::PermissionDenied)
    }

    /// Allows `access` to `[key, range_end)` (etcd's conventions) when auth is off, for root,
    /// or when the user's permissions cover the whole range.
    pub fn range(
        &self,
        user: Option<&str>,
        access: Access,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), AuthError> {
        if !self.enabled() {
            return Ok(());
        }
        let perms = user
            .and_then(|u| self.users.get(u))
            .ok_or(AuthError::PermissionDenied)?;
        if perms.root {
            return Ok(());
        }
        let Some((start, end)) = interval(key, range_end) else {
            return Err(AuthError::PermissionDenied);
        };
        let set = match access {
            Access::Read => &perms.read,
            Access::Write => &perms.write,
        };
        if set.covers(&start, &end) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// Checks a whole transaction: every compare (read), every operation of both branches,
    /// nested transactions included.
    pub fn txn(&self, user: Option<&str>, txn: &TxnRequest) -> Result<(), AuthError> {
        if !self.enabled() {
            return Ok(());
        }
        for c in &txn.compare {
            self.range(user, Access::Read, &c.key, &c.range_end)?;
        }
        for op in txn.success.iter().chain(&txn.failure) {
            self.op(user, op)?;
        }
        Ok(())
    }

    /// Checks one operation as its own request would be checked.
    pub fn op(&self, user: Option<&str>, op: &Op) -> Result<(), AuthError> {
        match op {
            Op::Range(r) => self.range(user, Access::Read, &r.key, &r.range_end),
            Op::Put(p) => self.put(user, p),
            Op::DeleteRange(d) => self.delete(user, d),
            Op::Txn(t) => self.txn(user, t),
        }
    }

    /// A put writes its key, and reads it too when it asks for the previous value.
    pub fn put(&self, user: Option<&str>, p: &PutRequest) -> Result<(), AuthError> {
        self.range(user, Access::Write, &p.key, &[])?;
        if p.prev_kv {
            self.range(user, Access::Read, &p.key, &[])?;
        }
        Ok(())
    }

    /// A delete writes its range, and reads it too when it asks for the previous values.
    pub fn delete(&self, user: Option<&str>, d: &DeleteRangeRequest) -> Result<(), AuthError> {
        self.range(user, Access::Write, &d.key, &d.range_end)?;
        if d.prev_kv {
            self.range(user, Access::Read, &d.key, &d.range_end)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AuthCommand, PermKind, Permission};
    use crate::mvcc::{Compare, CompareResult, CompareTarget, RangeRequest};

    /// Auth on; `alice` may read and write `a..c` (as two permissions) and read the key `r`;
    /// `root` is root; `nobody` has no role.
    fn view() -> AuthView {
        let mut s = AuthState::default();
        let cmds = [
            AuthCommand::UserAdd {
                name: "root".into(),
            },
            AuthCommand::UserGrantRole {
                user: "root".into(),
                role: ROOT.into(),
            },
            AuthCommand::UserAdd {
                name: "alice".into(),
            },
            AuthCommand::UserAdd {
                name: "nobody".into(),
            },
            AuthCommand::RoleAdd { name: "rw".into() },
            AuthCommand::RoleGrantPermission {
                role: "rw".into(),
                permission: Permission {
                    kind: PermKind::ReadWrite,
                    key: b"a".to_vec(),
                    range_end: b"b".to_vec(),
                },
            },
            AuthCommand::RoleGrantPermission {
                role: "rw".into(),
                permission: Permission {
                    kind: PermKind::ReadWrite,
                    key: b"b".to_vec(),
                    range_end: b"c".to_vec(),
                },
            },
            AuthCommand::RoleGrantPermission {
                role: "rw".into(),
                permission: Permission {
                    kind: PermKind::Read,
                    key: b"r".to_vec(),
                    range_end: vec![],
                },
            },
            AuthCommand::UserGrantRole {
                user: "alice".into(),
                role: "rw".into(),
            },
            AuthCommand::Enable,
        ];
        for c in &cmds {
            s.apply(c).unwrap();
        }
        AuthView::new(s)
    }

    const DENIED: Result<(), AuthError> = Err(AuthError::PermissionDenied);

    #[test]
    fn ranges_must_be_covered_whole_by_merged_permissions() {
        let v = view();
        let alice = Some("alice");
        assert_eq!(v.range(alice, Access::Write, b"a", b""), Ok(()));
        assert_eq!(
            v.range(alice, Access::Read, b"a", b"c"),
            Ok(()),
            "a..b + b..c"
        );
        assert_eq!(v.range(alice, Access::Read, b"a", b"d"), DENIED);
        assert_eq!(v.range(alice, Access::Read, b"a", &[0]), DENIED);
        assert_eq!(v.range(alice, Access::Read, b"r", b""), Ok(()));
        assert_eq!(v.range(alice, Access::Write, b"r", b""), DENIED);
        assert_eq!(
            v.range(alice, Access::Read, b"r", b"s"),
            DENIED,
            "r\\0 is not r"
        );
        assert_eq!(v.range(alice, Access::Read, b"c", b""), DENIED);
        assert_eq!(
            v.range(alice, Access::Read, b"b", b"a"),
            DENIED,
            "empty range"
        );
        assert_eq!(v.range(Some("nobody"), Access::Read, b"a", b""), DENIED);
        assert_eq!(v.range(Some("ghost"), Access::Read, b"a", b""), DENIED);
        assert_eq!(v.range(None, Access::Read, b"a", b""), DENIED);
        assert_eq!(v.range(Some("root"), Access::Write, b"", &[0]), Ok(()));
        assert_eq!(v.admin(Some("root")), Ok(()));
        assert_eq!(v.admin(alice), DENIED);
        assert_eq!(v.admin(None), DENIED);

        let off = AuthView::new(AuthState::default());
        assert_eq!(off.range(None, Access::Write, b"z", b""), Ok(()));
        assert_eq!(off.admin(None), Ok(()));
    }

    #[test]
    fn a_transaction_is_denied_by_any_part_of_either_branch_at_any_depth() {
        let v = view();
        let alice = Some("alice");
        let put = |k: &[u8]| Op::Put(PutRequest::new(k.to_vec(), b"v".to_vec()));
        let allowed = TxnRequest {
            compare: vec![Compare::key(
                b"r".to_vec(),
                CompareResult::Equal,
                CompareTarget::Version(0),
            )],
            success: vec![put(b"a1")],
            failure: vec![Op::Range(RangeRequest::key(b"b1".to_vec()))],
        };
        assert_eq!(v.txn(alice, &allowed), Ok(()));

        let mut compare_outside = allowed.clone();
        compare_outside.compare[0].key = b"z".to_vec();
        assert_eq!(v.txn(alice, &compare_outside), DENIED);

        let mut failure_branch = allowed.clone();
        failure_branch.failure.push(put(b"z"));
        assert_eq!(v.txn(alice, &failure_branch), DENIED);

        let nested = TxnRequest {
            compare: vec![],
            success: vec![Op::Txn(TxnRequest {
                compare: vec![],
                success: vec![],
                failure: vec![Op::Txn(TxnRequest {
                    compare: vec![],
                    success: vec![put(b"zz")],
                    failure: vec![],
                })],
            })],
            failure: vec![],
        };
        assert_eq!(v.txn(alice, &nested), DENIED);

        let delete_with_prev = Op::DeleteRange(DeleteRangeRequest {
            key: b"r".to_vec(),
            range_end: vec![],
            prev_kv: true,
        });
        assert_eq!(v.op(alice, &delete_with_prev), DENIED, "r is read-only");
        let mut put_prev = PutRequest::new(b"a".to_vec(), b"v".to_vec());
        put_prev.prev_kv = true;
        assert_eq!(v.op(alice, &Op::Put(put_prev)), Ok(()));
    }
}

//! `rampart user …`, `rampart role …`, `rampart auth enable|disable|status`: etcdctl's auth
//! commands, flags and output. Users have no passwords: `user add` needs `--no-password`, since
//! the client certificate is the login.

use anyhow::anyhow;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use super::client::ConnArgs;
use super::grpc::with_timeout;
use super::kv::{b64, header_json};
use super::output::{OutputFormat, emit};
use super::{CliError, exit};
use crate::api::proto::authpb;
use crate::api::proto::etcdserverpb as pb;
use crate::api::proto::etcdserverpb::auth_client::AuthClient;

/// etcd's answer when user root lacks role root.
const ROOT_ROLE_MISSING: &str = "etcdserver: root user does not have root role";
/// etcd's answer to adding a role that exists.
const ROLE_EXISTS: &str = "etcdserver: role name already exists";

/// User commands.
#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user (the certificate naming it is its login: spiffe://CLUSTER/user/NAME or CN).
    Add {
        /// The user name.
        name: String,
        /// Required: rampart users have no password (kept for etcdctl's command line).
        #[arg(long)]
        no_password: bool,
    },
    /// Show a user's roles.
    Get {
        /// The user name.
        name: String,
        /// Also show each role's permissions.
        #[arg(long)]
        detail: bool,
    },
    /// List the users.
    List,
    /// Delete a user.
    Delete {
        /// The user name.
        name: String,
    },
    /// Grant a role to a user.
    GrantRole {
        /// The user name.
        user: String,
        /// The role name.
        role: String,
    },
    /// Revoke a role from a user.
    RevokeRole {
        /// The user name.
        user: String,
        /// The role name.
        role: String,
    },
}

/// Role commands.
#[derive(Debug, Args)]
pub struct RoleArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: RoleCommand,
}

/// A key range as etcdctl's permission commands take it.
#[derive(Debug, Args)]
struct RangeArgs {
    /// The key (or the first key of the range).
    key: String,
    /// The end of the range (exclusive).
    range_end: Option<String>,
    /// Every key with KEY as prefix.
    #[arg(long, conflicts_with_all = ["range_end", "from_key"])]
    prefix: bool,
    /// Every key from KEY on.
    #[arg(long, conflicts_with = "range_end")]
    from_key: bool,
}

impl RangeArgs {
    fn bounds(&self) -> (Vec<u8>, Vec<u8>) {
        let key = self.key.as_bytes().to_vec();
        let end = if self.prefix {
            crate::mvcc::prefix_range_end(&key)
        } else if self.from_key {
            vec![0]
        } else {
            self.range_end
                .as_ref()
                .map(|e| e.as_bytes().to_vec())
                .unwrap_or_default()
        };
        (key, end)
    }
}

/// What a permission allows, as etcdctl spells it.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum PermArg {
    Read,
    Write,
    Readwrite,
}

#[derive(Debug, Subcommand)]
enum RoleCommand {
    /// Add a role.
    Add {
        /// The role name.
        name: String,
    },
    /// Show a role's permissions.
    Get {
        /// The role name.
        name: String,
    },
    /// List the roles.
    List,
    /// Delete a role (and revoke it from every user).
    Delete {
        /// The role name.
        name: String,
    },
    /// Grant a role read, write or readwrite on a key or range.
    GrantPermission {
        /// The role name.
        name: String,
        /// read, write or readwrite.
        #[arg(value_enum, ignore_case = true)]
        perm: PermArg,
        #[command(flatten)]
        range: RangeArgs,
    },
    /// Revoke the permission on exactly this key or range from a role.
    RevokePermission {
        /// The role name.
        name: String,
        #[command(flatten)]
        range: RangeArgs,
    },
}

/// `auth enable|disable|status`.
#[derive(Debug, Args)]
pub struct AuthArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: AuthCommand,
}

#[derive(Debug, Subcommand)]
enum AuthCommand {
    /// Check every request against its user's roles (needs user root with role root).
    Enable,
    /// Stop checking: every client certificate of the cluster may do anything.
    Disable,
    /// Whether auth is enabled, and the auth revision.
    Status,
}

/// Prints `text` as lines (nothing at all for an empty list, as etcdctl).
fn emit_line(text: &str) -> std::io::Result<()> {
    if text.is_empty() {
        return Ok(());
    }
    emit(&format!("{text}\n"))
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn refuse_table(format: OutputFormat) -> Result<(), CliError> {
    if format == OutputFormat::Table {
        return Err(CliError::with_code(
            exit::BAD_FEATURE,
            anyhow!("table not supported as output format"),
        ));
    }
    Ok(())
}

/// The response as JSON (header and `fields`) or as etcdctl's text.
fn reply(json: bool, header: Option<&pb::ResponseHeader>, fields: Value, text: String) -> String {
    if json {
        json_text(header, fields)
    } else {
        text
    }
}

/// The JSON etcdctl prints for a response: the header and the given fields.
fn json_text(header: Option<&pb::ResponseHeader>, fields: Value) -> String {
    let mut m = serde_json::Map::new();
    m.insert("header".into(), header_json(header));
    if let Value::Object(extra) = fields {
        m.extend(extra);
    }
    Value::Object(m).to_string()
}

/// Runs a user command.
pub fn run_user(args: UserArgs, format: OutputFormat) -> Result<(), CliError> {
    refuse_table(format)?;
    if let UserCommand::Add {
        no_password: false, ..
    } = args.command
    {
        return Err(CliError::with_code(
            exit::BAD_ARGS,
            anyhow!(
                "rampart users have no password: the client certificate is the login; run `user add NAME --no-password` and issue the user's certificate with `rampart pki issue client NAME`"
            ),
        ));
    }
    runtime()?.block_on(async {
        let channel = args.conn.connect().await?;
        let mut auth = AuthClient::new(channel);
        let t = args.conn.command_timeout;
        let json = format == OutputFormat::Json;
        let text = match args.command {
            UserCommand::Add { name, .. } => {
                let r = with_timeout(
                    t,
                    auth.user_add(pb::AuthUserAddRequest {
                        name: name.clone(),
                        options: Some(authpb::UserAddOptions { no_password: true }),
                        ..Default::default()
                    }),
                )
                .await?;
                reply(
                    json,
                    r.header.as_ref(),
                    json!({}),
                    format!("User {name} created"),
                )
            }
            UserCommand::Get { name, detail } => {
                let r = with_timeout(
                    t,
                    auth.user_get(pb::AuthUserGetRequest { name: name.clone() }),
                )
                .await?;
                if json {
                    json_text(r.header.as_ref(), json!({"roles": r.roles}))
                } else if detail {
                    let mut out = format!("User: {name}\n");
                    for role in &r.roles {
                        let p = with_timeout(
                            t,
                            auth.role_get(pb::AuthRoleGetRequest { role: role.clone() }),
                        )
                        .await?;
                        out.push('\n');
                        out.push_str(&role_text(role, &p.perm));
                    }
                    out.trim_end().to_owned()
                } else {
                    format!("User: {name}\nRoles: {}", r.roles.join(" "))
                }
            }
            UserCommand::List => {
                let r = with_timeout(t, auth.user_list(pb::AuthUserListRequest {})).await?;
                reply(
                    json,
                    r.header.as_ref(),
                    json!({"users": r.users}),
                    r.users.join("\n"),
                )
            }
            UserCommand::Delete { name } => {
                let r = with_timeout(
                    t,
                    auth.user_delete(pb::AuthUserDeleteRequest { name: name.clone() }),
                )
                .await?;
                reply(
                    json,
                    r.header.as_ref(),
                    json!({}),
                    format!("User {name} deleted"),
                )
            }
            UserCommand::GrantRole { user, role } => {
                let req = pb::AuthUserGrantRoleRequest {
                    user: user.clone(),
                    role: role.clone(),
                };
                let r = with_timeout(t, auth.user_grant_role(req)).await?;
                reply(
                    json,
                    r.header.as_ref(),
                    json!({}),
                    format!("Role {role} is granted to user {user}"),
                )
            }
            UserCommand::RevokeRole { user, role } => {
                let req = pb::AuthUserRevokeRoleRequest {
                    name: user.clone(),
                    role: role.clone(),
                };
                let r = with_timeout(t, auth.user_revoke_role(req)).await?;
                reply(
                    json,
                    r.header.as_ref(),
                    json!({}),
                    format!("Role {role} is revoked from user {user}"),
                )
            }
        };
        emit_line(&text)?;
        Ok(())
    })
}

/// A role's permissions as etcdctl prints them.
fn role_text(name: &str, perms: &[authpb::Permission]) -> String {
    use authpb::permission::Type;
    let line = |p: &authpb::Permission| {
        let key = String::from_utf8_lossy(&p.key);
        if p.range_end.is_empty() {
            return format!("\t{key}\n");
        }
        let mut s = if p.range_end == [0] {
            format!("\t[{key}, <open ended>")
        } else {
            format!("\t[{key}, {})", String::from_utf8_lossy(&p.range_end))
        };
        if !p.key.is_empty() && crate::mvcc::prefix_range_end(&p.key) == p.range_end {
            s.push_str(&format!(" (prefix {key})"));
        }
        s.push('\n');
        s
    };
    let mut out = format!("Role {name}\nKV Read:\n");
    for p in perms {
        if matches!(
            Type::try_from(p.perm_type),
            Ok(Type::Read | Type::Readwrite)
        ) {
            out.push_str(&line(p));
        }
    }
    out.push_str("KV Write:\n");
    for p in perms {
        if matches!(
            Type::try_from(p.perm_type),
            Ok(Type::Write | Type::Readwrite)
        ) {
            out.push_str(&line(p));
        }
    }
    out
}

fn perm_json(p: &authpb::Permission) -> Value {
    let mut m = serde_json::Map::new();
    if p.perm_type != 0 {
        m.insert("permType".into(), json!(p.perm_type));
    }
    if !p.key.is_empty() {
        m.insert("key".into(), json!(b64(&p.key)));
    }
    if !p.range_end.is_empty() {
        m.insert("range_end".into(), json!(b64(&p.range_end)));
    }
    Value::Object(m)
}

/// Runs a role command.
pub fn run_role(args: RoleArgs, format: OutputFormat) -> Result<(), CliError> {
    refuse_table(format)?;
    runtime()?.block_on(async {
        let channel = args.conn.connect().await?;
        let mut auth = AuthClient::new(channel);
        let t = args.conn.command_timeout;
        let json = format == OutputFormat::Json;
        let text = match args.command {
            RoleCommand::Add { name } => {
                let r = with_timeout(
                    t,
                    auth.role_add(pb::AuthRoleAddRequest { name: name.clone() }),
                )
                .await?;
                reply(
                    json,
                    r.header.as_ref(),
                    json!({}),
                    format!("Role {name} created"),
                )
            }
            RoleCommand::Get { name } => {
                let r = with_timeout(
                    t,
                    auth.role_get(pb::AuthRoleGetRequest { role: name.clone() }),
                )
                .await?;
                if json {
                    let perms: Vec<Value> = r.perm.iter().map(perm_json).collect();
                    json_text(r.header.as_ref(), json!({"perm": perms}))
                } else {
                    role_text(&name, &r.perm).trim_end().to_owned()
                }
            }
            RoleCommand::List => {
                let r = with_timeout(t, auth.role_list(pb::AuthRoleListRequest {})).await?;
                reply(
                    json,
                    r.header.as_ref(),
                    json!({"roles": r.roles}),
                    r.roles.join("\n"),
                )
            }
            RoleCommand::Delete { name } => {
                let r = with_timeout(
                    t,
                    auth.role_delete(pb::AuthRoleDeleteRequest { role: name.clone() }),
                )
                .await?;
                reply(
                    json,
                    r.header.as_ref(),
                    json!({}),
                    format!("Role {name} deleted"),
                )
            }
            RoleCommand::GrantPermission { name, perm, range } => {
                let (key, range_end) = range.bounds();
                let perm_type = match perm {
                    PermArg::Read => authpb::permission::Type::Read,
                    PermArg::Write => authpb::permission::Type::Write,
                    PermArg::Readwrite => authpb::permission::Type::Readwrite,
                } as i32;
                let req = pb::AuthRoleGrantPermissionRequest {
                    name: name.clone(),
                    perm: Some(authpb::Permission {
                        perm_type,
                        key,
                        range_end,
                    }),
                };
                let r = with_timeout(t, auth.role_grant_permission(req)).await?;
                reply(
                    json,
                    r.header.as_ref(),
                    json!({}),
                    format!("Role {name} updated"),
                )
            }
            RoleCommand::RevokePermission { name, range } => {
                let (key, range_end) = range.bounds();
                let req = pb::AuthRoleRevokePermissionRequest {
                    role: name.clone(),
                    key: key.clone(),
                    range_end: range_end.clone(),
                };
                let r = with_timeout(t, auth.role_revoke_permission(req)).await?;
                let key = String::from_utf8_lossy(&key);
                if json {
                    json_text(r.header.as_ref(), json!({}))
                } else if range_end.is_empty() {
                    format!("Permission of key {key} is revoked from role {name}")
                } else if range_end == [0] {
                    format!("Permission of range [{key}, <open ended>) is revoked from role {name}")
                } else {
                    format!(
                        "Permission of range [{key}, {}) is revoked from role {name}",
                        String::from_utf8_lossy(&range_end)
                    )
                }
            }
        };
        emit_line(&text)?;
        Ok(())
    })
}

/// Runs an auth command.
pub fn run_auth(args: AuthArgs, format: OutputFormat) -> Result<(), CliError> {
    refuse_table(format)?;
    runtime()?.block_on(async {
        let channel = args.conn.connect().await?;
        let mut auth = AuthClient::new(channel);
        let t = args.conn.command_timeout;
        let json = format == OutputFormat::Json;
        let text = match args.command {
            AuthCommand::Enable => {
                let first =
                    tokio::time::timeout(t, auth.auth_enable(pb::AuthEnableRequest {})).await;
                let r = match first {
                    // As etcdctl: a root user without the root role gets it, then enable again.
                    Ok(Err(status)) if status.message() == ROOT_ROLE_MISSING => {
                        let add = auth.role_add(pb::AuthRoleAddRequest {
                            name: "root".into(),
                        });
                        match tokio::time::timeout(t, add).await {
                            Ok(Ok(_)) => {}
                            Ok(Err(s)) if s.message() == ROLE_EXISTS => {}
                            Ok(Err(s)) => return Err(super::grpc::status_error(&s)),
                            Err(_) => return Err(anyhow!("context deadline exceeded").into()),
                        }
                        let grant = pb::AuthUserGrantRoleRequest {
                            user: "root".into(),
                            role: "root".into(),
                        };
                        with_timeout(t, auth.user_grant_role(grant)).await?;
                        with_timeout(t, auth.auth_enable(pb::AuthEnableRequest {})).await?
                    }
                    Ok(Err(status)) => return Err(super::grpc::status_error(&status)),
                    Ok(Ok(r)) => r.into_inner(),
                    Err(_) => return Err(anyhow!("context deadline exceeded").into()),
                };
                reply(
                    json,
                    r.header.as_ref(),
                    json!({}),
                    "Authentication Enabled".to_owned(),
                )
            }
            AuthCommand::Disable => {
                let r = with_timeout(t, auth.auth_disable(pb::AuthDisableRequest {})).await?;
                reply(
                    json,
                    r.header.as_ref(),
                    json!({}),
                    "Authentication Disabled".to_owned(),
                )
            }
            AuthCommand::Status => {
                let r = with_timeout(t, auth.auth_status(pb::AuthStatusRequest {})).await?;
                if json {
                    json_text(
                        r.header.as_ref(),
                        json!({"enabled": r.enabled, "authRevision": r.auth_revision}),
                    )
                } else {
                    format!(
                        "Authentication Status: {}\nAuthRevision: {}",
                        r.enabled, r.auth_revision
                    )
                }
            }
        };
        emit_line(&text)?;
        Ok(())
    })
}

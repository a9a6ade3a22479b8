//! `rampart kv put|get|del|txn|compact`: etcdctl's commands, flags and output.

use std::io::Read;

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::CliError;
use super::client::{ConnArgs, parse_lease};
use super::grpc::with_timeout;
use super::output::OutputFormat;
use crate::api::proto::etcdserverpb as pb;
use crate::api::proto::etcdserverpb::kv_client::KvClient;
use crate::api::proto::mvccpb;

/// The key-value commands.
#[derive(Debug, Args)]
pub struct KvArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Print keys and values in hex (as etcdctl --hex).
    #[arg(long, global = true)]
    hex: bool,
    #[command(subcommand)]
    command: KvCommand,
}

#[derive(Debug, Subcommand)]
enum KvCommand {
    /// Put a key (the value is read from stdin when not given).
    Put(PutArgs),
    /// Get a key or a range of keys.
    Get(GetArgs),
    /// Delete a key or a range of keys.
    Del(DelArgs),
    /// Run a transaction read from stdin in etcdctl's format: compares, a blank line,
    /// success requests, a blank line, failure requests.
    Txn(TxnArgs),
    /// Compact the history up to a revision.
    Compact(CompactArgs),
}

#[derive(Debug, Args)]
struct PutArgs {
    key: String,
    value: Option<String>,
    /// Attach a lease (hex ID).
    #[arg(long, default_value = "0")]
    lease: String,
    /// Print the previous key-value.
    #[arg(long)]
    prev_kv: bool,
    /// Keep the current value.
    #[arg(long)]
    ignore_value: bool,
    /// Keep the current lease.
    #[arg(long)]
    ignore_lease: bool,
}

#[derive(Debug, Args)]
struct RangeFlags {
    /// Treat KEY as a prefix.
    #[arg(long)]
    prefix: bool,
    /// Every key from KEY on.
    #[arg(long)]
    from_key: bool,
}

#[derive(Debug, Args)]
struct GetArgs {
    key: String,
    range_end: Option<String>,
    #[command(flatten)]
    range: RangeFlags,
    /// Read at this revision.
    #[arg(long, default_value_t = 0)]
    rev: i64,
    /// Most keys to return.
    #[arg(long, default_value_t = 0)]
    limit: i64,
    /// ASCEND or DESCEND.
    #[arg(long)]
    order: Option<String>,
    /// CREATE, KEY, MODIFY, VALUE or VERSION.
    #[arg(long)]
    sort_by: Option<String>,
    /// Keys only.
    #[arg(long)]
    keys_only: bool,
    /// Only the number of keys.
    #[arg(long)]
    count_only: bool,
    /// Values only.
    #[arg(long)]
    print_value_only: bool,
    /// l (linearizable) or s (serializable).
    #[arg(long, default_value = "l")]
    consistency: String,
    /// Only keys modified at or after this revision.
    #[arg(long, default_value_t = 0)]
    min_mod_rev: i64,
    /// Only keys modified at or before this revision.
    #[arg(long, default_value_t = 0)]
    max_mod_rev: i64,
    /// Only keys created at or after this revision.
    #[arg(long, default_value_t = 0)]
    min_create_rev: i64,
    /// Only keys created at or before this revision.
    #[arg(long, default_value_t = 0)]
    max_create_rev: i64,
}

#[derive(Debug, Args)]
struct DelArgs {
    key: String,
    range_end: Option<String>,
    #[command(flatten)]
    range: RangeFlags,
    /// Print the deleted key-values.
    #[arg(long)]
    prev_kv: bool,
}

#[derive(Debug, Args)]
struct TxnArgs {
    /// Accepted for etcdctl compatibility; the transaction is read from stdin either way.
    #[arg(short, long)]
    interactive: bool,
}

#[derive(Debug, Args)]
struct CompactArgs {
    revision: i64,
    /// Wait until the compaction is physically applied.
    #[arg(long)]
    physical: bool,
}

/// etcd's prefix range end: the prefix with its last byte below 0xff incremented.
pub use crate::mvcc::prefix_range_end as prefix_end;

fn range_end(key: &[u8], explicit: Option<&str>, flags: &RangeFlags) -> anyhow::Result<Vec<u8>> {
    if flags.prefix && flags.from_key {
        bail!("--prefix and --from-key cannot be set at the same time, choose one");
    }
    if explicit.is_some() && (flags.prefix || flags.from_key) {
        bail!(
            "too many arguments, only accept one argument when `--prefix` or `--from-key` is set"
        );
    }
    Ok(if flags.prefix {
        if key.is_empty() {
            vec![0]
        } else {
            prefix_end(key)
        }
    } else if flags.from_key {
        vec![0]
    } else {
        explicit.map(|e| e.as_bytes().to_vec()).unwrap_or_default()
    })
}

fn get_request(a: &GetArgs) -> anyhow::Result<pb::RangeRequest> {
    use pb::range_request::{SortOrder, SortTarget};
    let key = a.key.as_bytes().to_vec();
    let range_end = if a.range.from_key && a.key.is_empty() {
        vec![0]
    } else {
        range_end(&key, a.range_end.as_deref(), &a.range)?
    };
    let key = if a.range.from_key && key.is_empty() {
        vec![0]
    } else {
        key
    };
    let sort_order = match a.order.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None => SortOrder::None,
        Some("ASCEND") => SortOrder::Ascend,
        Some("DESCEND") => SortOrder::Descend,
        Some(other) => bail!("bad sort order {other:?}: use ASCEND or DESCEND"),
    };
    let sort_target = match a.sort_by.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("KEY") => SortTarget::Key,
        Some("CREATE") => SortTarget::Create,
        Some("MODIFY") => SortTarget::Mod,
        Some("VALUE") => SortTarget::Value,
        Some("VERSION") => SortTarget::Version,
        Some(other) => {
            bail!("bad sort target {other:?}: use CREATE, KEY, MODIFY, VALUE or VERSION")
        }
    };
    let serializable = match a.consistency.as_str() {
        "l" => false,
        "s" => true,
        other => bail!("unknown consistency flag {other:?}: use l or s"),
    };
    if a.print_value_only && a.keys_only {
        bail!("--print-value-only and --keys-only cannot be set at the same time");
    }
    Ok(pb::RangeRequest {
        key,
        range_end,
        limit: a.limit,
        revision: a.rev,
        sort_order: sort_order as i32,
        sort_target: sort_target as i32,
        serializable,
        keys_only: a.keys_only,
        count_only: a.count_only,
        min_mod_revision: a.min_mod_rev,
        max_mod_revision: a.max_mod_rev,
        min_create_revision: a.min_create_rev,
        max_create_revision: a.max_create_rev,
    })
}

/// Runs a kv command.
pub fn run(args: KvArgs, format: OutputFormat) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(args, format))
}

enum Prepared {
    Put(pb::PutRequest),
    Get(pb::RangeRequest, bool),
    Del(pb::DeleteRangeRequest),
    Txn(pb::TxnRequest),
    Compact(pb::CompactionRequest),
}

/// Parses everything before dialing, so bad input fails fast and offline.
fn prepare(command: &KvCommand) -> anyhow::Result<Prepared> {
    Ok(match command {
        KvCommand::Put(a) => {
            let value = match &a.value {
                Some(v) => v.clone(),
                None if a.ignore_value => String::new(),
                None => {
                    let mut v = String::new();
                    std::io::stdin()
                        .read_to_string(&mut v)
                        .context("reading the value from stdin")?;
                    v
                }
            };
            if a.key.is_empty() {
                bail!("put command needs 1 argument and input from stdin or 2 arguments");
            }
            Prepared::Put(pb::PutRequest {
                key: a.key.as_bytes().to_vec(),
                value: value.into_bytes(),
                lease: parse_lease(&a.lease)
                    .ok_or_else(|| anyhow!("bad lease ID ({:?}), expecting ID in Hex", a.lease))?,
                prev_kv: a.prev_kv,
                ignore_value: a.ignore_value,
                ignore_lease: a.ignore_lease,
            })
        }
        KvCommand::Get(a) => Prepared::Get(get_request(a)?, a.print_value_only),
        KvCommand::Del(a) => {
            let key = a.key.as_bytes().to_vec();
            Prepared::Del(pb::DeleteRangeRequest {
                range_end: range_end(&key, a.range_end.as_deref(), &a.range)?,
                key,
                prev_kv: a.prev_kv,
            })
        }
        KvCommand::Txn(_) => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the transaction from stdin")?;
            Prepared::Txn(super::txn_parse::parse_txn(&text)?)
        }
        KvCommand::Compact(a) => {
            if a.revision <= 0 {
                bail!(
                    "bad revision {:?}: a revision is a positive number",
                    a.revision
                );
            }
            Prepared::Compact(pb::CompactionRequest {
                revision: a.revision,
                physical: a.physical,
            })
        }
    })
}

async fn run_async(args: KvArgs, format: OutputFormat) -> Result<(), CliError> {
    let printer = Printer {
        format,
        hex: args.hex,
    };
    let prepared =
        prepare(&args.command).map_err(|e| CliError::with_code(super::exit::BAD_ARGS, e))?;
    let channel = args.conn.connect().await?;
    let mut kv = KvClient::new(channel).max_decoding_message_size(usize::MAX);
    let t = args.conn.command_timeout;
    let out = match prepared {
        Prepared::Put(req) => printer.put(&with_timeout(t, kv.put(req)).await?),
        Prepared::Get(req, value_only) => {
            printer.get(&with_timeout(t, kv.range(req)).await?, value_only)
        }
        Prepared::Del(req) => printer.del(&with_timeout(t, kv.delete_range(req)).await?),
        Prepared::Txn(req) => printer.txn(&with_timeout(t, kv.txn(req)).await?),
        Prepared::Compact(req) => {
            let revision = req.revision;
            let resp = with_timeout(t, kv.compact(req)).await?;
            printer.compact(&resp, revision)
        }
    }?;
    print!("{out}");
    Ok(())
}

/// etcdctl's printers for kv responses.
pub struct Printer {
    /// simple, json or table.
    pub format: OutputFormat,
    /// Keys and values in hex.
    pub hex: bool,
}

/// Bytes as Go's encoding/json writes a `[]byte`: standard base64.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A header as etcdctl's JSON shows it (Go's encoding/json of the protobuf struct).
pub fn header_json(h: Option<&pb::ResponseHeader>) -> Value {
    let h = h.copied().unwrap_or_default();
    json!({"cluster_id": h.cluster_id, "member_id": h.member_id, "revision": h.revision, "raft_term": h.raft_term})
}

/// A header's fields as Go's encoding/json writes them with `omitempty`: zero fields left out.
/// For etcdctl's responses that embed the header (lease commands) or print it as a value.
pub fn header_fields(h: Option<&pb::ResponseHeader>) -> serde_json::Map<String, Value> {
    let h = h.copied().unwrap_or_default();
    let mut m = serde_json::Map::new();
    if h.cluster_id != 0 {
        m.insert("cluster_id".into(), json!(h.cluster_id));
    }
    if h.member_id != 0 {
        m.insert("member_id".into(), json!(h.member_id));
    }
    if h.revision != 0 {
        m.insert("revision".into(), json!(h.revision));
    }
    if h.raft_term != 0 {
        m.insert("raft_term".into(), json!(h.raft_term));
    }
    m
}

/// A key-value as etcdctl's JSON shows it: bytes in base64, zero fields omitted.
pub fn kv_json(kv: &mvccpb::KeyValue) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("key".into(), json!(b64(&kv.key)));
    for (name, v) in [
        ("create_revision", kv.create_revision),
        ("mod_revision", kv.mod_revision),
        ("version", kv.version),
    ] {
        if v != 0 {
            m.insert(name.into(), json!(v));
        }
    }
    if !kv.value.is_empty() {
        m.insert("value".into(), json!(b64(&kv.value)));
    }
    if kv.lease != 0 {
        m.insert("lease".into(), json!(kv.lease));
    }
    Value::Object(m)
}

fn with_field(mut v: Value, name: &str, field: Value, keep: bool) -> Value {
    if keep && let Some(map) = v.as_object_mut() {
        map.insert(name.to_owned(), field);
    }
    v
}

impl Printer {
    fn bytes(&self, b: &[u8]) -> String {
        if self.hex {
            b.iter().map(|x| format!("\\x{x:02x}")).collect()
        } else {
            String::from_utf8_lossy(b).into_owned()
        }
    }

    /// As etcdctl: the key (unless values only), then the value — an empty line for
    /// `--keys-only`.
    pub fn kv_lines(&self, kv: &mvccpb::KeyValue, value_only: bool) -> String {
        if value_only {
            format!("{}\n", self.bytes(&kv.value))
        } else {
            format!("{}\n{}\n", self.bytes(&kv.key), self.bytes(&kv.value))
        }
    }

    fn unsupported(&self) -> anyhow::Error {
        anyhow!("table is not supported as output format")
    }

    /// `put`.
    pub fn put(&self, r: &pb::PutResponse) -> anyhow::Result<String> {
        match self.format {
            OutputFormat::Json => Ok(format!("{}\n", put_json(r))),
            OutputFormat::Table => Err(self.unsupported()),
            OutputFormat::Simple => {
                let mut out = "OK\n".to_owned();
                if let Some(prev) = &r.prev_kv {
                    out.push_str(&self.kv_lines(prev, false));
                }
                Ok(out)
            }
        }
    }

    /// `get`.
    pub fn get(&self, r: &pb::RangeResponse, value_only: bool) -> anyhow::Result<String> {
        match self.format {
            OutputFormat::Json => Ok(format!("{}\n", range_json(r))),
            OutputFormat::Table => Err(self.unsupported()),
            // As etcdctl, --count-only prints nothing here; -w json shows the count.
            OutputFormat::Simple => Ok(r
                .kvs
                .iter()
                .map(|kv| self.kv_lines(kv, value_only))
                .collect()),
        }
    }

    /// `del`.
    pub fn del(&self, r: &pb::DeleteRangeResponse) -> anyhow::Result<String> {
        match self.format {
            OutputFormat::Json => Ok(format!("{}\n", delete_json(r))),
            OutputFormat::Table => Err(self.unsupported()),
            OutputFormat::Simple => {
                let mut out = format!("{}\n", r.deleted);
                for kv in &r.prev_kvs {
                    out.push_str(&self.kv_lines(kv, false));
                }
                Ok(out)
            }
        }
    }

    /// `txn`.
    pub fn txn(&self, r: &pb::TxnResponse) -> anyhow::Result<String> {
        use pb::response_op::Response;
        match self.format {
            OutputFormat::Json => Ok(format!("{}\n", txn_json(r))),
            OutputFormat::Table => Err(self.unsupported()),
            OutputFormat::Simple => {
                let mut out = if r.succeeded {
                    "SUCCESS\n"
                } else {
                    "FAILURE\n"
                }
                .to_owned();
                for op in &r.responses {
                    out.push('\n');
                    out.push_str(&match &op.response {
                        Some(Response::ResponsePut(p)) => self.put(p)?,
                        Some(Response::ResponseRange(g)) => self.get(g, false)?,
                        Some(Response::ResponseDeleteRange(d)) => self.del(d)?,
                        Some(Response::ResponseTxn(t)) => self.txn(t)?,
                        None => String::new(),
                    });
                }
                Ok(out)
            }
        }
    }

    /// `compact`.
    pub fn compact(&self, r: &pb::CompactionResponse, revision: i64) -> anyhow::Result<String> {
        match self.format {
            OutputFormat::Json => Ok(format!(
                "{}\n",
                json!({"header": header_json(r.header.as_ref())})
            )),
            OutputFormat::Table => Err(self.unsupported()),
            OutputFormat::Simple => Ok(format!("compacted revision {revision}\n")),
        }
    }
}

fn put_json(r: &pb::PutResponse) -> Value {
    let v = json!({"header": header_json(r.header.as_ref())});
    with_field(
        v,
        "prev_kv",
        r.prev_kv.as_ref().map(kv_json).unwrap_or(Value::Null),
        r.prev_kv.is_some(),
    )
}

fn range_json(r: &pb::RangeResponse) -> Value {
    let v = json!({"header": header_json(r.header.as_ref())});
    let v = with_field(
        v,
        "kvs",
        Value::Array(r.kvs.iter().map(kv_json).collect()),
        !r.kvs.is_empty(),
    );
    let v = with_field(v, "more", json!(r.more), r.more);
    with_field(v, "count", json!(r.count), r.count != 0)
}

fn delete_json(r: &pb::DeleteRangeResponse) -> Value {
    let v = json!({"header": header_json(r.header.as_ref())});
    let v = with_field(v, "deleted", json!(r.deleted), r.deleted != 0);
    with_field(
        v,
        "prev_kvs",
        Value::Array(r.prev_kvs.iter().map(kv_json).collect()),
        !r.prev_kvs.is_empty(),
    )
}

fn txn_json(r: &pb::TxnResponse) -> Value {
    use pb::response_op::Response;
    let responses: Vec<Value> = r
        .responses
        .iter()
        .map(|op| match &op.response {
            Some(Response::ResponsePut(p)) => json!({"Response": {"response_put": put_json(p)}}),
            Some(Response::ResponseRange(g)) => {
                json!({"Response": {"response_range": range_json(g)}})
            }
            Some(Response::ResponseDeleteRange(d)) => {
                json!({"Response": {"response_delete_range": delete_json(d)}})
            }
            Some(Response::ResponseTxn(t)) => json!({"Response": {"response_txn": txn_json(t)}}),
            None => json!({}),
        })
        .collect();
    let v = json!({"header": header_json(r.header.as_ref())});
    let v = with_field(v, "succeeded", json!(true), r.succeeded);
    with_field(
        v,
        "responses",
        Value::Array(responses),
        !r.responses.is_empty(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> mvccpb::KeyValue {
        mvccpb::KeyValue {
            key: k.into(),
            value: v.into(),
            create_revision: 2,
            mod_revision: 3,
            version: 2,
            lease: 0,
        }
    }

    fn header() -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            cluster_id: 14841639068965178418,
            member_id: 10276657743932975437,
            revision: 3,
            raft_term: 2,
        })
    }

    #[test]
    fn simple_output_matches_etcdctl() {
        let p = Printer {
            format: OutputFormat::Simple,
            hex: false,
        };
        let get = pb::RangeResponse {
            header: header(),
            kvs: vec![kv("foo", "bar"), kv("foo2", "baz")],
            more: false,
            count: 2,
        };
        assert_eq!(p.get(&get, false).unwrap(), "foo\nbar\nfoo2\nbaz\n");
        assert_eq!(p.get(&get, true).unwrap(), "bar\nbaz\n");
        assert_eq!(
            p.put(&pb::PutResponse {
                header: header(),
                prev_kv: None
            })
            .unwrap(),
            "OK\n"
        );
        assert_eq!(
            p.del(&pb::DeleteRangeResponse {
                header: header(),
                deleted: 1,
                prev_kvs: vec![]
            })
            .unwrap(),
            "1\n"
        );
        let txn = pb::TxnResponse {
            header: header(),
            succeeded: true,
            responses: vec![pb::ResponseOp {
                response: Some(pb::response_op::Response::ResponsePut(pb::PutResponse {
                    header: header(),
                    prev_kv: None,
                })),
            }],
        };
        assert_eq!(p.txn(&txn).unwrap(), "SUCCESS\n\nOK\n");
        let hex = Printer {
            format: OutputFormat::Simple,
            hex: true,
        };
        assert_eq!(
            hex.get(
                &pb::RangeResponse {
                    kvs: vec![kv("a", "b")],
                    ..Default::default()
                },
                false
            )
            .unwrap(),
            "\\x61\n\\x62\n"
        );
    }

    #[test]
    fn json_output_uses_etcdctls_field_names() {
        let get = pb::RangeResponse {
            header: header(),
            kvs: vec![kv("foo", "bar")],
            more: false,
            count: 1,
        };
        let v = range_json(&get);
        assert_eq!(v["header"]["cluster_id"], json!(14841639068965178418u64));
        assert_eq!(v["kvs"][0]["key"], "Zm9v");
        assert_eq!(v["kvs"][0]["value"], "YmFy");
        assert_eq!(v["kvs"][0]["mod_revision"], 3);
        assert_eq!(v["count"], 1);
        assert!(
            v.get("more").is_none(),
            "false fields are omitted as Go's omitempty does"
        );
    }

    #[test]
    fn prefix_and_from_key_ranges() {
        assert_eq!(prefix_end(b"foo"), b"fop".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        let flags = RangeFlags {
            prefix: true,
            from_key: false,
        };
        assert!(range_end(b"k", Some("z"), &flags).is_err());
    }
}

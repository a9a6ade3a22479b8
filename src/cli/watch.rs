//! `rampart watch`: etcdctl's watch. One watch on a key, a range or a prefix; its events are
//! printed as they arrive until Ctrl-C, or until the server cancels the watch.

use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::Args;
use serde_json::{Value, json};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use super::client::{ConnArgs, interrupted};
use super::grpc::status_message;
use super::kv::{Printer, header_fields, kv_json, prefix_end};
use super::output::{OutputFormat, emit};
use super::{CliError, exit};
use crate::api::proto::etcdserverpb as pb;
use crate::api::proto::etcdserverpb::watch_client::WatchClient;
use crate::api::proto::mvccpb;

/// Pause before opening the watch again after the stream broke.
const RETRY_WAIT: Duration = Duration::from_millis(500);

/// etcd's texts for a watch the server canceled; etcdctl prints them.
const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const FUTURE_REVISION: &str = "etcdserver: mvcc: required revision is a future revision";
const NO_LEADER: &str = "etcdserver: no leader";

/// Watch a key, a range or a prefix.
#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The key, or the prefix with --prefix (default: $ETCDCTL_WATCH_KEY).
    key: Option<String>,
    /// Watch the range [KEY, RANGE_END) (default: $ETCDCTL_WATCH_RANGE_END).
    range_end: Option<String>,
    /// Watch every key that starts with KEY.
    #[arg(long)]
    prefix: bool,
    /// Start at this revision, replaying the history since; 0 starts now.
    #[arg(long, default_value_t = 0)]
    rev: i64,
    /// Print each event's previous key-value too.
    #[arg(long)]
    prev_kv: bool,
    /// Ask for periodic progress notifications (printed as `progress notify: REVISION`).
    #[arg(long)]
    progress_notify: bool,
    /// Print keys and values in hex (as etcdctl --hex).
    #[arg(long)]
    hex: bool,
    /// A command to run for every event, after `--`; it finds the event in ETCD_WATCH_REVISION,
    /// ETCD_WATCH_EVENT_TYPE, ETCD_WATCH_KEY and ETCD_WATCH_VALUE.
    #[arg(last = true, value_name = "COMMAND")]
    exec: Vec<String>,
}

/// Runs `watch` until Ctrl-C (exit 0) or until the server cancels the watch (exit 5).
pub fn run(args: WatchArgs, format: OutputFormat) -> Result<(), CliError> {
    if format == OutputFormat::Table {
        return Err(CliError::with_code(
            exit::BAD_FEATURE,
            anyhow!("table not supported as output format"),
        ));
    }
    let env = |name: &str| std::env::var(name).ok();
    let (key, range_end) = watch_range(
        args.key.as_deref(),
        args.range_end.as_deref(),
        args.prefix,
        env("ETCDCTL_WATCH_KEY").as_deref(),
        env("ETCDCTL_WATCH_RANGE_END").as_deref(),
    )
    .map_err(|e| CliError::with_code(exit::BAD_ARGS, e))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        tokio::select! {
            result = watch(&args, format, key, range_end) => result,
            () = interrupted() => Ok(()),
        }
    })
}

/// The watched range, from the arguments or else etcdctl's `ETCDCTL_WATCH_KEY` and
/// `ETCDCTL_WATCH_RANGE_END`, with etcdctl's errors for the combinations it refuses.
fn watch_range(
    key: Option<&str>,
    range_end: Option<&str>,
    prefix: bool,
    env_key: Option<&str>,
    env_range_end: Option<&str>,
) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let env_key = env_key.filter(|k| !k.is_empty());
    let env_range_end = env_range_end.filter(|r| !r.is_empty());
    if let (None, Some(end)) = (env_key, env_range_end) {
        bail!("ETCDCTL_WATCH_KEY is empty but got ETCDCTL_WATCH_RANGE_END={end:?}");
    }
    let (key, range_end) = match (key, env_key) {
        (Some(_), Some(_)) => bail!("bad number of arguments (found conflicting environment key)"),
        (Some(key), None) => (key, range_end),
        (None, Some(key)) => (key, env_range_end),
        (None, None) => bail!("bad number of arguments"),
    };
    if range_end.is_some() && prefix {
        bail!("`range_end` and `--prefix` are mutually exclusive");
    }
    let key = key.as_bytes().to_vec();
    Ok(if prefix && key.is_empty() {
        // An empty prefix is every key: etcd spells that as [\0, \0).
        (vec![0], vec![0])
    } else if prefix {
        let end = prefix_end(&key);
        (key, end)
    } else {
        (
            key,
            range_end.map(|e| e.as_bytes().to_vec()).unwrap_or_default(),
        )
    })
}

/// How one watch stream ended.
enum End {
    /// The server canceled the watch; `response` is its cancel response, `None` when the
    /// stream itself failed.
    Canceled {
        reason: String,
        response: Option<pb::WatchResponse>,
    },
    /// The connection broke; the watch resumes after the last revision seen.
    Broken,
}

async fn watch(
    args: &WatchArgs,
    format: OutputFormat,
    key: Vec<u8>,
    range_end: Vec<u8>,
) -> Result<(), CliError> {
    let printer = Printer {
        format,
        hex: args.hex,
    };
    let mut next_rev = args.rev;
    let mut channel = args.conn.connect().await?;
    loop {
        let create = pb::WatchCreateRequest {
            key: key.clone(),
            range_end: range_end.clone(),
            start_revision: next_rev,
            progress_notify: args.progress_notify,
            prev_kv: args.prev_kv,
            ..Default::default()
        };
        match follow(channel, create, args, &printer, &mut next_rev).await? {
            End::Canceled { reason, response } => {
                eprintln!("watch was canceled ({reason})");
                let text = match &response {
                    Some(r) => response_text(&printer, r),
                    None => closed_text(format),
                };
                emit(&text)?;
                return Err(CliError::with_code(
                    exit::INTERRUPTED,
                    anyhow!("watch is canceled by the server"),
                ));
            }
            // As etcd's client does: reconnect (to any endpoint that answers) and carry on
            // from the next revision, so nothing is missed or printed twice.
            End::Broken => channel = reconnect(&args.conn).await,
        }
    }
}

async fn reconnect(conn: &ConnArgs) -> Channel {
    loop {
        tokio::time::sleep(RETRY_WAIT).await;
        if let Ok(channel) = conn.connect().await {
            return channel;
        }
    }
}

/// Opens one watch stream and prints what it delivers until it ends.
async fn follow(
    channel: Channel,
    create: pb::WatchCreateRequest,
    args: &WatchArgs,
    printer: &Printer,
    next_rev: &mut i64,
) -> Result<End, CliError> {
    let mut client = WatchClient::new(channel).max_decoding_message_size(usize::MAX);
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
    };
    // The request side stays open: a client that closes it ends its watches.
    let requests = tokio_stream::once(create).chain(tokio_stream::pending());
    let mut request = tonic::Request::new(requests);
    // As etcdctl: have the server cancel the watch when it loses its leader, rather than
    // leave it silently stale.
    request
        .metadata_mut()
        .insert("hasleader", MetadataValue::from_static("true"));
    let mut stream =
        match tokio::time::timeout(args.conn.command_timeout, client.watch(request)).await {
            Err(_) => return Ok(End::Broken),
            Ok(Err(status)) => return Ok(stream_failed(&status)),
            Ok(Ok(response)) => response.into_inner(),
        };
    loop {
        let response = match stream.message().await {
            Ok(Some(response)) => response,
            // etcd's client treats a stream closed without a status as final.
            Ok(None) => {
                return Ok(End::Canceled {
                    reason: "EOF".to_owned(),
                    response: None,
                });
            }
            Err(status) => return Ok(stream_failed(&status)),
        };
        if response.canceled {
            return Ok(End::Canceled {
                reason: cancel_reason(&response),
                response: Some(response),
            });
        }
        *next_rev = next_revision(*next_rev, &response);
        // etcdctl never shows the creation acknowledgement.
        if response.created {
            continue;
        }
        emit(&response_text(printer, &response))?;
        let revision = response.header.map_or(0, |h| h.revision);
        for event in &response.events {
            run_exec(&args.exec, revision, event).await?;
        }
    }
}

/// A failed stream: worth reopening when the cluster is only briefly away (etcd's client
/// retries Unavailable and Internal), final otherwise.
fn stream_failed(status: &tonic::Status) -> End {
    let transient = match status.code() {
        Code::Unavailable | Code::Internal => status.message() != NO_LEADER,
        // A broken connection surfaces as Unknown with the transport error as its source;
        // an Unknown answered by the server has none.
        Code::Unknown => std::error::Error::source(status).is_some(),
        _ => false,
    };
    if transient {
        End::Broken
    } else {
        End::Canceled {
            reason: status_message(status),
            response: None,
        }
    }
}

/// Why the server canceled a watch, worded as etcd's client reports it.
fn cancel_reason(r: &pb::WatchResponse) -> String {
    if r.compact_revision != 0 {
        COMPACTED.to_owned()
    } else if !r.cancel_reason.is_empty() {
        r.cancel_reason.clone()
    } else {
        FUTURE_REVISION.to_owned()
    }
}

/// A response with no events that only reports how far the watch has come.
fn is_progress_notify(r: &pb::WatchResponse) -> bool {
    r.events.is_empty()
        && !r.canceled
        && !r.created
        && r.compact_revision == 0
        && r.header.is_some_and(|h| h.revision != 0)
}

/// The revision to resume from after `r`: just past what was delivered or acknowledged.
fn next_revision(current: i64, r: &pb::WatchResponse) -> i64 {
    let header_rev = r.header.map_or(0, |h| h.revision);
    let seen = if let Some(last) = r.events.last() {
        last.kv.as_ref().map_or(0, |kv| kv.mod_revision + 1)
    } else if (r.created && current == 0) || is_progress_notify(r) {
        // A watch from "now" starts after the revision it was created at.
        header_rev + 1
    } else {
        0
    };
    current.max(seen)
}

fn event_type_name(event_type: i32) -> String {
    mvccpb::event::EventType::try_from(event_type)
        .map(|t| t.as_str_name().to_owned())
        .unwrap_or_else(|_| event_type.to_string())
}

/// What etcdctl prints on stdout for one response: a progress line for a progress
/// notification, then each event (simple) or the whole response (json).
fn response_text(printer: &Printer, r: &pb::WatchResponse) -> String {
    let mut out = String::new();
    if is_progress_notify(r) {
        let revision = r.header.map_or(0, |h| h.revision);
        out.push_str(&format!("progress notify: {revision}\n"));
    }
    if printer.format == OutputFormat::Json {
        out.push_str(&format!("{}\n", watch_json(r)));
        return out;
    }
    for event in &r.events {
        out.push_str(&event_type_name(event.r#type));
        out.push('\n');
        if let Some(prev) = &event.prev_kv {
            out.push_str(&printer.kv_lines(prev, false));
        }
        let kv = event.kv.clone().unwrap_or_default();
        out.push_str(&printer.kv_lines(&kv, false));
    }
    out
}

/// etcdctl's JSON of a watch response (Go's encoding/json of clientv3.WatchResponse: field
/// names capitalised, the header's zero fields and an event's zero type left out).
fn watch_json(r: &pb::WatchResponse) -> Value {
    let events: Vec<Value> = r.events.iter().map(event_json).collect();
    json!({
        "Header": Value::Object(header_fields(r.header.as_ref())),
        "Events": events,
        "CompactRevision": r.compact_revision,
        "Canceled": r.canceled,
        "Created": r.created,
    })
}

/// What etcdctl prints when the stream itself failed: a canceled response with nothing else.
fn closed_text(format: OutputFormat) -> String {
    if format != OutputFormat::Json {
        return String::new();
    }
    let closed = json!({
        "Header": {},
        "Events": null,
        "CompactRevision": 0,
        "Canceled": true,
        "Created": false,
    });
    format!("{closed}\n")
}

fn event_json(event: &mvccpb::Event) -> Value {
    let mut m = serde_json::Map::new();
    if event.r#type != 0 {
        m.insert("type".into(), json!(event.r#type));
    }
    if let Some(kv) = &event.kv {
        m.insert("kv".into(), kv_json(kv));
    }
    if let Some(prev) = &event.prev_kv {
        m.insert("prev_kv".into(), kv_json(prev));
    }
    Value::Object(m)
}

/// Runs the `--` command for one event, as etcdctl does: the event in the environment,
/// output to ours, and the whole watch ends (exit 1) if the command fails.
async fn run_exec(exec: &[String], revision: i64, event: &mvccpb::Event) -> Result<(), CliError> {
    let Some((program, rest)) = exec.split_first() else {
        return Ok(());
    };
    let kv = event.kv.clone().unwrap_or_default();
    let status = tokio::process::Command::new(program)
        .args(rest)
        .env("ETCD_WATCH_REVISION", revision.to_string())
        .env(
            "ETCD_WATCH_EVENT_TYPE",
            go_quote(event_type_name(event.r#type).as_bytes()),
        )
        .env("ETCD_WATCH_KEY", go_quote(&kv.key))
        .env("ETCD_WATCH_VALUE", go_quote(&kv.value))
        .status()
        .await;
    let failure = match status {
        Ok(status) if status.success() => return Ok(()),
        Ok(status) => match status.code() {
            Some(code) => format!("exit status {code}"),
            None => {
                use std::os::unix::process::ExitStatusExt;
                format!("signal: {}", status.signal().unwrap_or_default())
            }
        },
        Err(e) => e.to_string(),
    };
    let quoted: Vec<String> = exec.iter().map(|a| go_quote(a.as_bytes())).collect();
    eprintln!("command [{}] error ({failure})", quoted.join(" "));
    Err(CliError::reported(exit::ERROR))
}

/// Bytes quoted as Go's `%q` does, which is how etcdctl hands keys and values to the `--`
/// command: printable text as is, escapes for the rest.
fn go_quote(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\u{7}' => out.push_str("\\a"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{b}' => out.push_str("\\v"),
                ' ' => out.push(' '),
                c if (c as u32) < 0x20 || c == '\u{7f}' => {
                    out.push_str(&format!("\\x{:02x}", c as u32));
                }
                c if c.is_control() || c.is_whitespace() => {
                    if (c as u32) < 0x10000 {
                        out.push_str(&format!("\\u{:04x}", c as u32));
                    } else {
                        out.push_str(&format!("\\U{:08x}", c as u32));
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn header(revision: i64) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            cluster_id: 14841639068965178418,
            member_id: 10276657743932975437,
            revision,
            raft_term: 2,
        })
    }

    fn kv(key: &str, value: &str, mod_revision: i64) -> mvccpb::KeyValue {
        mvccpb::KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision: 2,
            mod_revision,
            version: 1,
            lease: 0,
        }
    }

    fn put(key: &str, value: &str, mod_revision: i64) -> mvccpb::Event {
        mvccpb::Event {
            r#type: mvccpb::event::EventType::Put as i32,
            kv: Some(kv(key, value, mod_revision)),
            prev_kv: None,
        }
    }

    fn simple() -> Printer {
        Printer {
            format: OutputFormat::Simple,
            hex: false,
        }
    }

    #[test]
    fn simple_output_is_type_then_prev_kv_then_kv() {
        let delete = mvccpb::Event {
            r#type: mvccpb::event::EventType::Delete as i32,
            kv: Some(mvccpb::KeyValue {
                key: "foo".into(),
                mod_revision: 5,
                ..Default::default()
            }),
            prev_kv: Some(kv("foo", "bar", 4)),
        };
        let r = pb::WatchResponse {
            header: header(5),
            events: vec![put("foo", "bar", 4), delete],
            ..Default::default()
        };
        assert_eq!(
            response_text(&simple(), &r),
            "PUT\nfoo\nbar\nDELETE\nfoo\nbar\nfoo\n\n"
        );
        let hex = Printer {
            format: OutputFormat::Simple,
            hex: true,
        };
        let r = pb::WatchResponse {
            header: header(4),
            events: vec![put("a", "b", 4)],
            ..Default::default()
        };
        assert_eq!(response_text(&hex, &r), "PUT\n\\x61\n\\x62\n");
    }

    #[test]
    fn progress_notifications_print_their_revision() {
        let r = pb::WatchResponse {
            header: header(9),
            ..Default::default()
        };
        assert_eq!(response_text(&simple(), &r), "progress notify: 9\n");
        let json = Printer {
            format: OutputFormat::Json,
            hex: false,
        };
        let text = response_text(&json, &r);
        assert!(
            text.starts_with("progress notify: 9\n{\"Header\":"),
            "{text}"
        );
    }

    #[test]
    fn json_output_has_etcdctls_shape() {
        let r = pb::WatchResponse {
            header: header(3),
            events: vec![
                put("foo", "bar", 3),
                mvccpb::Event {
                    r#type: 1,
                    kv: Some(mvccpb::KeyValue {
                        key: "foo".into(),
                        mod_revision: 4,
                        ..Default::default()
                    }),
                    prev_kv: None,
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            watch_json(&r).to_string(),
            concat!(
                r#"{"Header":{"cluster_id":14841639068965178418,"member_id":10276657743932975437,"revision":3,"raft_term":2},"#,
                r#""Events":[{"kv":{"key":"Zm9v","create_revision":2,"mod_revision":3,"version":1,"value":"YmFy"}},"#,
                r#"{"type":1,"kv":{"key":"Zm9v","mod_revision":4}}],"#,
                r#""CompactRevision":0,"Canceled":false,"Created":false}"#
            )
        );
        let compacted = pb::WatchResponse {
            header: header(9),
            canceled: true,
            compact_revision: 5,
            ..Default::default()
        };
        assert_eq!(watch_json(&compacted)["Events"], json!([]));
        assert_eq!(watch_json(&compacted)["CompactRevision"], 5);
        assert_eq!(
            closed_text(OutputFormat::Json),
            "{\"Header\":{},\"Events\":null,\"CompactRevision\":0,\"Canceled\":true,\"Created\":false}\n"
        );
        assert_eq!(closed_text(OutputFormat::Simple), "");
    }

    #[test]
    fn cancel_reasons_are_etcds_texts() {
        let compacted = pb::WatchResponse {
            canceled: true,
            compact_revision: 5,
            ..Default::default()
        };
        assert_eq!(
            cancel_reason(&compacted),
            "etcdserver: mvcc: required revision has been compacted"
        );
        let denied = pb::WatchResponse {
            canceled: true,
            cancel_reason: "etcdserver: permission denied".into(),
            ..Default::default()
        };
        assert_eq!(cancel_reason(&denied), "etcdserver: permission denied");
        let future = pb::WatchResponse {
            canceled: true,
            ..Default::default()
        };
        assert_eq!(
            cancel_reason(&future),
            "etcdserver: mvcc: required revision is a future revision"
        );
    }

    #[test]
    fn a_resumed_watch_starts_after_what_was_seen() {
        let created = pb::WatchResponse {
            header: header(7),
            created: true,
            ..Default::default()
        };
        assert_eq!(next_revision(0, &created), 8);
        assert_eq!(next_revision(3, &created), 3, "--rev is kept");
        let events = pb::WatchResponse {
            header: header(12),
            events: vec![put("a", "1", 10), put("b", "2", 11)],
            ..Default::default()
        };
        assert_eq!(next_revision(8, &events), 12);
        let progress = pb::WatchResponse {
            header: header(20),
            ..Default::default()
        };
        assert_eq!(next_revision(12, &progress), 21);
    }

    #[test]
    fn ranges_follow_etcdctls_rules() {
        assert_eq!(
            watch_range(Some("foo"), None, false, None, None).unwrap(),
            (b"foo".to_vec(), vec![])
        );
        assert_eq!(
            watch_range(Some("a"), Some("c"), false, None, None).unwrap(),
            (b"a".to_vec(), b"c".to_vec())
        );
        assert_eq!(
            watch_range(Some("foo"), None, true, None, None).unwrap(),
            (b"foo".to_vec(), b"fop".to_vec())
        );
        assert_eq!(
            watch_range(Some(""), None, true, None, None).unwrap(),
            (vec![0], vec![0])
        );
        assert_eq!(
            watch_range(None, None, false, Some("k"), Some("m")).unwrap(),
            (b"k".to_vec(), b"m".to_vec())
        );
        let err = |r: anyhow::Result<(Vec<u8>, Vec<u8>)>| r.unwrap_err().to_string();
        assert_eq!(
            err(watch_range(Some("a"), Some("c"), true, None, None)),
            "`range_end` and `--prefix` are mutually exclusive"
        );
        assert_eq!(
            err(watch_range(Some("a"), None, false, Some("k"), None)),
            "bad number of arguments (found conflicting environment key)"
        );
        assert_eq!(
            err(watch_range(None, None, false, None, None)),
            "bad number of arguments"
        );
        assert_eq!(
            err(watch_range(Some("a"), None, false, None, Some("z"))),
            "ETCDCTL_WATCH_KEY is empty but got ETCDCTL_WATCH_RANGE_END=\"z\""
        );
    }

    #[test]
    fn the_command_after_the_separator_is_kept_apart() {
        let cli = crate::cli::Cli::try_parse_from([
            "rampart", "watch", "foo", "--prefix", "--", "echo", "-n", "hi",
        ])
        .unwrap();
        let crate::cli::Command::Watch(args) = cli.command else {
            panic!("parsed as another command");
        };
        assert_eq!(args.key.as_deref(), Some("foo"));
        assert_eq!(args.range_end, None);
        assert!(args.prefix);
        assert_eq!(args.exec, ["echo", "-n", "hi"]);
        let cli =
            crate::cli::Cli::try_parse_from(["rampart", "watch", "a", "b", "--rev", "3"]).unwrap();
        let crate::cli::Command::Watch(args) = cli.command else {
            panic!("parsed as another command");
        };
        assert_eq!(args.range_end.as_deref(), Some("b"));
        assert_eq!(args.rev, 3);
        assert!(args.exec.is_empty());
        // The key may come from ETCDCTL_WATCH_KEY, leaving only the command.
        let cli = crate::cli::Cli::try_parse_from(["rampart", "watch", "--", "echo"]).unwrap();
        let crate::cli::Command::Watch(args) = cli.command else {
            panic!("parsed as another command");
        };
        assert_eq!(args.key, None);
        assert_eq!(args.exec, ["echo"]);
    }

    #[test]
    fn exec_environment_is_quoted_as_go_does() {
        assert_eq!(go_quote(b"foo"), "\"foo\"");
        assert_eq!(go_quote(b"PUT"), "\"PUT\"");
        assert_eq!(go_quote(b"a \"b\"\n"), "\"a \\\"b\\\"\\n\"");
        assert_eq!(go_quote(b"\x00\xff"), "\"\\x00\\xff\"");
        assert_eq!(go_quote("é".as_bytes()), "\"é\"");
    }
}

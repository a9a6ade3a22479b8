//! etcdctl's transaction text: compares, a blank line, success requests, a blank line,
//! failure requests. e.g.
//!
//! ```text
//! mod("key1") > "0"
//! value("key2") = "x"
//!
//! put key1 "new value"
//! get key2 --prefix
//!
//! del key1
//! ```

use anyhow::{anyhow, bail};

use super::kv::prefix_end;
use crate::api::proto::etcdserverpb as pb;

/// Parses the three sections into a request.
pub fn parse_txn(text: &str) -> anyhow::Result<pb::TxnRequest> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut sections: Vec<Vec<&str>> = vec![vec![]];
    for line in lines {
        if line.is_empty() {
            if sections.len() < 3 {
                sections.push(vec![]);
            }
        } else if let Some(current) = sections.last_mut() {
            current.push(line);
        }
    }
    sections.resize(3, vec![]);
    Ok(pb::TxnRequest {
        compare: sections[0]
            .iter()
            .map(|l| parse_compare(l))
            .collect::<Result<_, _>>()?,
        success: sections[1]
            .iter()
            .map(|l| parse_op(l))
            .collect::<Result<_, _>>()?,
        failure: sections[2]
            .iter()
            .map(|l| parse_op(l))
            .collect::<Result<_, _>>()?,
    })
}

/// Splits a line into words, honouring double quotes with `\"` and `\\` escapes.
fn words(line: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut word = String::new();
        if c == '"' {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => word.push(
                        chars
                            .next()
                            .ok_or_else(|| anyhow!("unfinished escape in {line:?}"))?,
                    ),
                    Some(ch) => word.push(ch),
                    None => bail!("unterminated quote in {line:?}"),
                }
            }
        } else {
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() {
                    break;
                }
                word.push(ch);
                chars.next();
            }
        }
        out.push(word);
    }
    Ok(out)
}

fn parse_compare(line: &str) -> anyhow::Result<pb::Compare> {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    let bad = || anyhow!("malformed comparison: {line:?}; write it as mod(\"key\") > \"5\"");
    let open = line.find('(').ok_or_else(bad)?;
    let close = line.rfind(')').ok_or_else(bad)?;
    let target_name = line[..open].trim();
    let inside = words(&line[open + 1..close].replace(',', " "))?;
    let (key, range_end) = match inside.as_slice() {
        [k] => (k.clone(), String::new()),
        [k, e] => (k.clone(), e.clone()),
        _ => return Err(bad()),
    };
    let rest = words(&line[close + 1..])?;
    let [op, value] = rest.as_slice() else {
        return Err(bad());
    };
    let result = match op.as_str() {
        "=" | "==" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        ">" => CompareResult::Greater,
        "<" => CompareResult::Less,
        _ => bail!("unknown comparison operator {op:?} in {line:?}: use =, !=, > or <"),
    };
    let number = || {
        value
            .parse::<i64>()
            .map_err(|_| anyhow!("{value:?} is not a number in {line:?}"))
    };
    let (target, union) = match target_name {
        "ver" | "version" => (CompareTarget::Version, TargetUnion::Version(number()?)),
        "c" | "create" => (
            CompareTarget::Create,
            TargetUnion::CreateRevision(number()?),
        ),
        "m" | "mod" => (CompareTarget::Mod, TargetUnion::ModRevision(number()?)),
        "val" | "value" => (
            CompareTarget::Value,
            TargetUnion::Value(value.as_bytes().to_vec()),
        ),
        "lease" => (
            CompareTarget::Lease,
            TargetUnion::Lease(
                u64::from_str_radix(value, 16)
                    .map_err(|_| anyhow!("{value:?} is not a hex lease ID"))?
                    as i64,
            ),
        ),
        other => {
            bail!("unknown comparison target {other:?}: use version, create, mod, value or lease")
        }
    };
    Ok(pb::Compare {
        result: result as i32,
        target: target as i32,
        key: key.into_bytes(),
        target_union: Some(union),
        range_end: range_end.into_bytes(),
    })
}

fn parse_op(line: &str) -> anyhow::Result<pb::RequestOp> {
    use pb::request_op::Request;
    let all = words(line)?;
    let (flags, args): (Vec<&String>, Vec<&String>) =
        all.iter().skip(1).partition(|w| w.starts_with("--"));
    let has = |f: &str| flags.iter().any(|x| x.as_str() == f);
    if let Some(unknown) = flags
        .iter()
        .find(|f| !["--prefix", "--from-key", "--prev-kv"].contains(&f.as_str()))
    {
        bail!("unknown flag {unknown} in {line:?}");
    }
    let range = |args: &[&String]| -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        let key = args
            .first()
            .ok_or_else(|| anyhow!("{line:?} needs a key"))?
            .as_bytes()
            .to_vec();
        let end = if has("--prefix") {
            prefix_end(&key)
        } else if has("--from-key") {
            vec![0]
        } else {
            args.get(1)
                .map(|e| e.as_bytes().to_vec())
                .unwrap_or_default()
        };
        Ok((key, end))
    };
    let request = match all.first().map(String::as_str) {
        Some("put") => {
            let [key, value] = args.as_slice() else {
                bail!("{line:?}: put needs a key and a value")
            };
            Request::RequestPut(pb::PutRequest {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
                prev_kv: has("--prev-kv"),
                ..Default::default()
            })
        }
        Some("get") => {
            let (key, range_end) = range(&args)?;
            Request::RequestRange(pb::RangeRequest {
                key,
                range_end,
                ..Default::default()
            })
        }
        Some("del") | Some("delete") => {
            let (key, range_end) = range(&args)?;
            Request::RequestDeleteRange(pb::DeleteRangeRequest {
                key,
                range_end,
                prev_kv: has("--prev-kv"),
            })
        }
        _ => bail!("unknown request {line:?}: use put, get or del"),
    };
    Ok(pb::RequestOp {
        request: Some(request),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::compare::TargetUnion;
    use pb::request_op::Request;

    #[test]
    fn parses_etcdctls_txn_text() {
        let t = parse_txn("mod(\"key1\") > \"0\"\nvalue(\"k 2\") = \"a b\"\n\nput key1 \"new value\"\nget key2 --prefix\n\ndel key1\n").unwrap();
        assert_eq!(t.compare.len(), 2);
        assert_eq!(t.compare[0].target_union, Some(TargetUnion::ModRevision(0)));
        assert_eq!(t.compare[1].key, b"k 2");
        assert_eq!(
            t.compare[1].target_union,
            Some(TargetUnion::Value(b"a b".to_vec()))
        );
        assert!(
            matches!(&t.success[0].request, Some(Request::RequestPut(p)) if p.value == b"new value")
        );
        assert!(
            matches!(&t.success[1].request, Some(Request::RequestRange(r)) if r.range_end == b"key3")
        );
        assert!(
            matches!(&t.failure[0].request, Some(Request::RequestDeleteRange(d)) if d.key == b"key1")
        );
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        assert!(
            parse_txn("mod(key1) >> 0\n")
                .unwrap_err()
                .to_string()
                .contains("operator")
        );
        assert!(
            parse_txn("size(\"k\") = 1\n")
                .unwrap_err()
                .to_string()
                .contains("target")
        );
        assert!(
            parse_txn("\nset k v\n")
                .unwrap_err()
                .to_string()
                .contains("unknown request")
        );
        assert!(
            parse_txn("\nput k\n")
                .unwrap_err()
                .to_string()
                .contains("put needs")
        );
    }
}

//! Rust types, clients and servers generated at build time from `proto/` (see `build.rs`).
//!
//! The modules mirror etcd's protobuf packages and are siblings, so the generated
//! `super::mvccpb::KeyValue` style paths resolve. Field numbers follow etcd v3.5; the
//! tests below pin the bytes of a few messages so that a renumbered field fails loudly.

// Generated code: its docs come from the .proto comments, which do not cover every item.
#[allow(missing_docs)]
pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
}

// Generated code: see `mvccpb`.
#[allow(missing_docs)]
pub mod authpb {
    include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
}

// Generated code: see `mvccpb`.
#[allow(missing_docs)]
pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
}

// Generated code: see `mvccpb`.
#[allow(missing_docs)]
pub mod v3lockpb {
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));
}

// Generated code: see `mvccpb`.
#[allow(missing_docs)]
pub mod v3electionpb {
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
}

#[cfg(test)]
mod tests {
    //! Expected bytes are written from etcd v3.5's field numbers (tag byte = number << 3 | wire
    //! type; wire type 0 = varint, 2 = length-delimited), not from our .proto files.

    use prost::Message;

    use super::authpb::{Permission, permission};
    use super::etcdserverpb::{
        Compare, DeleteRangeRequest, Member, MemberAddRequest, PutRequest, RangeRequest,
        RangeResponse, RequestOp, ResponseHeader, ResponseOp, StatusResponse, TxnRequest,
        TxnResponse, WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
        compare, range_request, request_op, response_op, watch_create_request, watch_request,
    };
    use super::mvccpb::{Event, KeyValue, event};

    fn header() -> ResponseHeader {
        ResponseHeader {
            cluster_id: 1,
            member_id: 2,
            revision: 3,
            raft_term: 4,
        }
    }

    #[test]
    fn put_request_uses_etcd_tags() {
        let put = PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            lease: 7,
            prev_kv: true,
            ..Default::default()
        };
        // key = 1 (bytes), value = 2 (bytes), lease = 3 (varint), prev_kv = 4 (varint).
        let expected = [0x0a, 0x01, b'k', 0x12, 0x01, b'v', 0x18, 0x07, 0x20, 0x01];
        assert_eq!(put.encode_to_vec(), expected);
        assert_eq!(PutRequest::decode(&expected[..]).unwrap(), put);
    }

    #[test]
    fn put_request_ignore_flags_use_tags_5_and_6() {
        let put = PutRequest {
            ignore_value: true,
            ignore_lease: true,
            ..Default::default()
        };
        assert_eq!(put.encode_to_vec(), [0x28, 0x01, 0x30, 0x01]);
    }

    #[test]
    fn range_request_uses_etcd_tags() {
        let range = RangeRequest {
            key: b"a".to_vec(),
            revision: 5,
            sort_order: range_request::SortOrder::Descend as i32,
            sort_target: range_request::SortTarget::Mod as i32,
            serializable: true,
            min_mod_revision: 9,
            max_create_revision: 11,
            ..Default::default()
        };
        let expected = [
            0x0a, 0x01, b'a', // key = 1
            0x20, 0x05, // revision = 4
            0x28, 0x02, // sort_order = 5, DESCEND = 2
            0x30, 0x03, // sort_target = 6, MOD = 3
            0x38, 0x01, // serializable = 7
            0x50, 0x09, // min_mod_revision = 10
            0x68, 0x0b, // max_create_revision = 13
        ];
        assert_eq!(range.encode_to_vec(), expected);
        assert_eq!(RangeRequest::decode(&expected[..]).unwrap(), range);
    }

    #[test]
    fn range_request_limit_and_flags_use_etcd_tags() {
        let range = RangeRequest {
            range_end: b"z".to_vec(),
            limit: 2,
            keys_only: true,
            count_only: true,
            max_mod_revision: 1,
            min_create_revision: 1,
            ..Default::default()
        };
        let expected = [
            0x12, 0x01, b'z', // range_end = 2
            0x18, 0x02, // limit = 3
            0x40, 0x01, // keys_only = 8
            0x48, 0x01, // count_only = 9
            0x58, 0x01, // max_mod_revision = 11
            0x60, 0x01, // min_create_revision = 12
        ];
        assert_eq!(range.encode_to_vec(), expected);
    }

    #[test]
    fn response_header_uses_etcd_tags() {
        assert_eq!(
            header().encode_to_vec(),
            [0x08, 0x01, 0x10, 0x02, 0x18, 0x03, 0x20, 0x04]
        );
    }

    #[test]
    fn compare_mod_revision_is_field_6_and_range_end_is_field_64() {
        let cmp = Compare {
            result: compare::CompareResult::Greater as i32,
            target: compare::CompareTarget::Mod as i32,
            key: b"k".to_vec(),
            range_end: b"z".to_vec(),
            target_union: Some(compare::TargetUnion::ModRevision(5)),
        };
        let expected = [
            0x08, 0x01, // result = 1, GREATER = 1
            0x10, 0x02, // target = 2, MOD = 2
            0x1a, 0x01, b'k', // key = 3
            0x30, 0x05, // target_union.mod_revision = 6
            0x82, 0x04, 0x01, b'z', // range_end = 64: tag 514 as a two-byte varint
        ];
        assert_eq!(cmp.encode_to_vec(), expected);
        assert_eq!(Compare::decode(&expected[..]).unwrap(), cmp);
    }

    #[test]
    fn compare_target_union_fields_use_etcd_tags() {
        let cases: [(compare::TargetUnion, &[u8]); 5] = [
            (compare::TargetUnion::Version(1), &[0x20, 0x01]),
            (compare::TargetUnion::CreateRevision(1), &[0x28, 0x01]),
            (compare::TargetUnion::ModRevision(1), &[0x30, 0x01]),
            (
                compare::TargetUnion::Value(b"v".to_vec()),
                &[0x3a, 0x01, b'v'],
            ),
            (compare::TargetUnion::Lease(1), &[0x40, 0x01]),
        ];
        for (target, expected) in cases {
            let cmp = Compare {
                target_union: Some(target.clone()),
                ..Default::default()
            };
            assert_eq!(cmp.encode_to_vec(), expected, "{target:?}");
        }
        assert_eq!(compare::CompareTarget::Lease as i32, 4);
        assert_eq!(compare::CompareResult::NotEqual as i32, 3);
    }

    #[test]
    fn txn_request_branches_use_etcd_tags() {
        let txn = TxnRequest {
            compare: vec![Compare::default()],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: b"k".to_vec(),
                    ..Default::default()
                })),
            }],
            failure: vec![RequestOp {
                request: Some(request_op::Request::RequestDeleteRange(
                    DeleteRangeRequest {
                        prev_kv: true,
                        ..Default::default()
                    },
                )),
            }],
        };
        let expected = [
            0x0a, 0x00, // compare = 1, empty Compare
            0x12, 0x05, // success = 2
            0x12, 0x03, 0x0a, 0x01, b'k', // RequestOp.request_put = 2 { key = 1 }
            0x1a, 0x04, // failure = 3
            0x1a, 0x02, 0x18, 0x01, // RequestOp.request_delete_range = 3 { prev_kv = 3 }
        ];
        assert_eq!(txn.encode_to_vec(), expected);
        assert_eq!(TxnRequest::decode(&expected[..]).unwrap(), txn);
    }

    #[test]
    fn nested_txn_is_request_op_field_4() {
        let op = RequestOp {
            request: Some(request_op::Request::RequestTxn(TxnRequest::default())),
        };
        assert_eq!(op.encode_to_vec(), [0x22, 0x00]);
    }

    #[test]
    fn watch_create_request_packs_filters_and_carries_watch_id() {
        let create = WatchCreateRequest {
            key: b"k".to_vec(),
            filters: vec![
                watch_create_request::FilterType::Noput as i32,
                watch_create_request::FilterType::Nodelete as i32,
            ],
            watch_id: 3,
            ..Default::default()
        };
        let expected = [
            0x0a, 0x01, b'k', // key = 1
            0x2a, 0x02, 0x00, 0x01, // filters = 5, packed: NOPUT = 0, NODELETE = 1
            0x38, 0x03, // watch_id = 7
        ];
        assert_eq!(create.encode_to_vec(), expected);
        assert_eq!(WatchCreateRequest::decode(&expected[..]).unwrap(), create);

        // proto3 parsers must also accept the unpacked form of a repeated enum.
        let unpacked = [0x28, 0x01, 0x28, 0x00];
        let decoded = WatchCreateRequest::decode(&unpacked[..]).unwrap();
        assert_eq!(decoded.filters, vec![1, 0]);
    }

    #[test]
    fn watch_create_request_flags_use_etcd_tags() {
        let create = WatchCreateRequest {
            range_end: b"z".to_vec(),
            start_revision: 2,
            progress_notify: true,
            prev_kv: true,
            fragment: true,
            ..Default::default()
        };
        let expected = [
            0x12, 0x01, b'z', // range_end = 2
            0x18, 0x02, // start_revision = 3
            0x20, 0x01, // progress_notify = 4
            0x30, 0x01, // prev_kv = 6
            0x40, 0x01, // fragment = 8
        ];
        assert_eq!(create.encode_to_vec(), expected);
    }

    #[test]
    fn watch_request_union_uses_etcd_tags() {
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: b"k".to_vec(),
                    ..Default::default()
                },
            )),
        };
        assert_eq!(create.encode_to_vec(), [0x0a, 0x03, 0x0a, 0x01, b'k']);

        let progress = WatchRequest {
            request_union: Some(watch_request::RequestUnion::ProgressRequest(
                WatchProgressRequest {},
            )),
        };
        assert_eq!(progress.encode_to_vec(), [0x1a, 0x00]);
    }

    #[test]
    fn watch_response_events_are_field_11() {
        let resp = WatchResponse {
            watch_id: 1,
            fragment: true,
            events: vec![Event {
                r#type: event::EventType::Delete as i32,
                ..Default::default()
            }],
            ..Default::default()
        };
        let expected = [
            0x10, 0x01, // watch_id = 2
            0x38, 0x01, // fragment = 7
            0x5a, 0x02, 0x08, 0x01, // events = 11 { type = 1, DELETE = 1 }
        ];
        assert_eq!(resp.encode_to_vec(), expected);
    }

    #[test]
    fn status_response_keeps_the_3_4_and_3_5_fields() {
        let status = StatusResponse {
            raft_applied_index: 8,
            errors: vec!["e".to_string()],
            db_size_in_use: 100,
            is_learner: true,
            ..Default::default()
        };
        let expected = [
            0x38, 0x08, // raftAppliedIndex = 7
            0x42, 0x01, b'e', // errors = 8
            0x48, 0x64, // dbSizeInUse = 9
            0x50, 0x01, // isLearner = 10
        ];
        assert_eq!(status.encode_to_vec(), expected);
        assert_eq!(StatusResponse::decode(&expected[..]).unwrap(), status);
    }

    #[test]
    fn members_carry_is_learner() {
        let member = Member {
            id: 1,
            is_learner: true,
            ..Default::default()
        };
        assert_eq!(member.encode_to_vec(), [0x08, 0x01, 0x28, 0x01]);

        let add = MemberAddRequest {
            peer_ur_ls: vec!["u".to_string()],
            is_learner: true,
        };
        assert_eq!(add.encode_to_vec(), [0x0a, 0x01, b'u', 0x10, 0x01]);
    }

    #[test]
    fn key_value_uses_etcd_tags() {
        let kv = KeyValue {
            key: b"k".to_vec(),
            create_revision: 2,
            mod_revision: 3,
            version: 4,
            value: b"v".to_vec(),
            lease: 6,
        };
        let expected = [
            0x0a, 0x01, b'k', 0x10, 0x02, 0x18, 0x03, 0x20, 0x04, 0x2a, 0x01, b'v', 0x30, 0x06,
        ];
        assert_eq!(kv.encode_to_vec(), expected);
    }

    #[test]
    fn permission_uses_etcd_tags() {
        let perm = Permission {
            perm_type: permission::Type::Readwrite as i32,
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
        };
        assert_eq!(
            perm.encode_to_vec(),
            [0x08, 0x02, 0x12, 0x01, b'a', 0x1a, 0x01, b'b']
        );
    }

    #[test]
    fn txn_response_round_trips() {
        let kv = KeyValue {
            key: b"key".to_vec(),
            create_revision: 10,
            mod_revision: 12,
            version: 3,
            value: b"value".to_vec(),
            lease: 0x1234_5678_9abc,
        };
        let txn = TxnResponse {
            header: Some(header()),
            succeeded: true,
            responses: vec![
                ResponseOp {
                    response: Some(response_op::Response::ResponseRange(RangeResponse {
                        header: Some(header()),
                        kvs: vec![kv.clone(), kv],
                        more: true,
                        count: 2,
                    })),
                },
                ResponseOp {
                    response: Some(response_op::Response::ResponseTxn(TxnResponse::default())),
                },
            ],
        };
        let bytes = txn.encode_to_vec();
        assert_eq!(TxnResponse::decode(bytes.as_slice()).unwrap(), txn);
    }

    #[test]
    fn negative_int64_fields_round_trip() {
        // etcd uses int64, not sint64: -1 is a ten-byte varint.
        let header = ResponseHeader {
            revision: -1,
            ..Default::default()
        };
        let bytes = header.encode_to_vec();
        assert_eq!(bytes.len(), 11);
        assert_eq!(ResponseHeader::decode(bytes.as_slice()).unwrap(), header);
    }

    #[test]
    fn services_use_etcd_grpc_names() {
        use super::{etcdserverpb, v3electionpb, v3lockpb};
        // The gRPC path is "/<package>.<Service>/<Method>"; clients hard-code it.
        let names = [
            etcdserverpb::kv_server::SERVICE_NAME,
            etcdserverpb::watch_server::SERVICE_NAME,
            etcdserverpb::lease_server::SERVICE_NAME,
            etcdserverpb::cluster_server::SERVICE_NAME,
            etcdserverpb::maintenance_server::SERVICE_NAME,
            etcdserverpb::auth_server::SERVICE_NAME,
            v3lockpb::lock_server::SERVICE_NAME,
            v3electionpb::election_server::SERVICE_NAME,
        ];
        assert_eq!(
            names,
            [
                "etcdserverpb.KV",
                "etcdserverpb.Watch",
                "etcdserverpb.Lease",
                "etcdserverpb.Cluster",
                "etcdserverpb.Maintenance",
                "etcdserverpb.Auth",
                "v3lockpb.Lock",
                "v3electionpb.Election",
            ]
        );
    }
}

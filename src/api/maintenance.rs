//! The Maintenance service: Status, Hash, HashKV, Defragment, Alarm, Snapshot.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tonic::{Request, Response, Status};

use super::authz::Requester;
use super::core::{API_VERSION, Core};
use super::kv::mvcc_status;
use super::proto::etcdserverpb as pb;
use super::status::{EtcdError, not_yet};
use super::stream::BoxStream;

/// Snapshot stream chunk size (etcd streams 32 KiB chunks).
const SNAPSHOT_CHUNK: usize = 32 * 1024;

/// etcd's Maintenance service over a member's [`Core`].
#[derive(Clone)]
pub struct MaintenanceService {
    core: Arc<Core>,
}

impl MaintenanceService {
    /// The service.
    pub fn new(core: Arc<Core>) -> MaintenanceService {
        MaintenanceService { core }
    }

    /// The raised alarms: the replicated ones, plus this member's while its raise is on its way.
    fn alarms(&self) -> Vec<pb::AlarmMember> {
        let mut members = self.core.node.alarms().nospace();
        if self.core.nospace() && members.is_empty() {
            members.insert(self.core.member_id);
        }
        members
            .into_iter()
            .map(|member_id| pb::AlarmMember {
                member_id,
                alarm: pb::AlarmType::Nospace as i32,
            })
            .collect()
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "maintenance request failed");
    Status::internal(format!("etcdserver: {e}"))
}

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for MaintenanceService {
    type SnapshotStream = BoxStream<pb::SnapshotResponse>;

    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        use pb::alarm_request::AlarmAction;
        let who = Requester::of(&request);
        let req = request.into_inner();
        if req.action != AlarmAction::Get as i32 {
            // Raising or clearing alarms changes what the whole cluster accepts: root only.
            self.core.authorize_admin(&who)?;
        }
        match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Get) => {}
            Ok(AlarmAction::Activate) if req.alarm == pb::AlarmType::Nospace as i32 => {
                self.core.check_quota();
            }
            Ok(AlarmAction::Deactivate)
                if req.alarm == pb::AlarmType::Nospace as i32
                    || req.alarm == pb::AlarmType::None as i32 =>
            {
                self.core.refuse_on_learner()?;
                self.core.disarm_nospace(req.member_id).await?;
            }
            _ => {}
        }
        let revision = self.core.node.store().current_revision();
        Ok(Response::new(pb::AlarmResponse {
            header: Some(self.core.header(revision)),
            alarms: self.alarms(),
        }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let s = self.core.node.status();
        let revision = self.core.node.store().current_revision();
        let errors = self
            .alarms()
            .iter()
            .map(|a| format!("memberID:{} alarm:NOSPACE ", a.member_id))
            .collect();
        Ok(Response::new(pb::StatusResponse {
            header: Some(self.core.header(revision)),
            version: API_VERSION.to_owned(),
            db_size: self.core.db_size(),
            leader: s.leader.unwrap_or(0),
            raft_index: s.last_log_index,
            raft_term: s.term,
            raft_applied_index: s.applied_index,
            errors,
            db_size_in_use: self.core.db_size_in_use(),
            is_learner: s.is_learner,
        }))
    }

    async fn defragment(
        &self,
        request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        self.core.authorize_admin(&Requester::of(&request))?;
        let core = self.core.clone();
        tokio::task::spawn_blocking(move || {
            for name in core.column_families() {
                if let Some(cf) = core.db.cf_handle(&name) {
                    core.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
                }
            }
        })
        .await
        .map_err(internal)?;
        let revision = self.core.node.store().current_revision();
        Ok(Response::new(pb::DefragmentResponse {
            header: Some(self.core.header(revision)),
        }))
    }

    async fn hash(
        &self,
        request: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        self.core.authorize_admin(&Requester::of(&request))?;
        let store = self.core.node.store();
        let (hash, revision) = tokio::task::spawn_blocking(move || store.hash())
            .await
            .map_err(internal)?
            .map_err(mvcc_status)?;
        Ok(Response::new(pb::HashResponse {
            header: Some(self.core.header(revision)),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        self.core.authorize_admin(&Requester::of(&request))?;
        let revision = request.into_inner().revision;
        let store = self.core.node.store();
        let h = tokio::task::spawn_blocking(move || store.hash_kv(revision))
            .await
            .map_err(internal)?
            .map_err(mvcc_status)?;
        Ok(Response::new(pb::HashKvResponse {
            header: Some(self.core.header(h.revision)),
            hash: h.hash,
            compact_revision: h.compact_revision,
        }))
    }

    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.core.authorize_admin(&Requester::of(&request))?;
        let core = self.core.clone();
        std::fs::create_dir_all(&core.tmp_dir).map_err(internal)?;
        let path = core.tmp_dir.join(format!("stream-{}.rsnap", rand_suffix()));
        let db = core.db.clone();
        let file_path = path.clone();
        tokio::task::spawn_blocking(move || crate::raft::snapshot_to(&db, &file_path))
            .await
            .map_err(internal)?
            .map_err(internal)?;
        let revision = core.node.store().current_revision();
        let header = core.header(revision);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::SnapshotResponse, Status>>(4);
        tokio::spawn(async move {
            let result = stream_file(&path, header, &tx).await;
            let _ = tokio::fs::remove_file(&path).await;
            if let Err(e) = result {
                let _ = tx.send(Err(internal(e))).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        self.core.authorize_admin(&Requester::of(&request))?;
        let target = request.into_inner().target_id;
        let node = &self.core.node;
        // As etcd: only the leader hands over leadership, and only to a voting member.
        if node.status().leader != Some(node.id()) {
            return Err(EtcdError::NotLeader.into());
        }
        let voter = node
            .members()
            .into_iter()
            .any(|m| m.id == target && !m.is_learner);
        if !voter {
            return Err(EtcdError::BadLeaderTransferee.into());
        }
        if target != node.id() {
            node.transfer_leader(target)
                .await
                .map_err(super::core::raft_status)?;
        }
        let revision = node.store().current_revision();
        Ok(Response::new(pb::MoveLeaderResponse {
            header: Some(self.core.header(revision)),
        }))
    }

    async fn downgrade(
        &self,
        request: Request<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        self.core.authorize_admin(&Requester::of(&request))?;
        Err(not_yet("Downgrade"))
    }
}

fn rand_suffix() -> String {
    let mut b = [0u8; 8];
    rand::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Streams the file, zero-padded to a multiple of 512 bytes, then the SHA-256 of all of that —
/// the layout etcd's server sends and its clients check (`size % 512 == 32`). rampart's
/// snapshot format ends at its own end marker and checksum, so the padding is ignored on read.
async fn stream_file(
    path: &std::path::Path,
    header: pb::ResponseHeader,
    tx: &tokio::sync::mpsc::Sender<Result<pb::SnapshotResponse, Status>>,
) -> std::io::Result<()> {
    let mut file = tokio::fs::File::open(path).await?;
    let len = file.metadata().await?.len();
    let padding = (512 - len % 512) % 512;
    let total = len + padding + 32;
    let mut sent = 0u64;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; SNAPSHOT_CHUNK];
    let mut first = true;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        sent += n as u64;
        let msg = pb::SnapshotResponse {
            header: if first { Some(header) } else { None },
            remaining_bytes: total - sent,
            blob: buf[..n].to_vec(),
        };
        first = false;
        if tx.send(Ok(msg)).await.is_err() {
            return Ok(());
        }
    }
    let mut tail = vec![0u8; padding as usize];
    hasher.update(&tail);
    tail.extend_from_slice(&hasher.finalize());
    let _ = tx
        .send(Ok(pb::SnapshotResponse {
            header: if first { Some(header) } else { None },
            remaining_bytes: 0,
            blob: tail,
        }))
        .await;
    Ok(())
}

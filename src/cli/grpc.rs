//! Running one gRPC call as etcdctl does: within the command timeout, errors printed as the
//! server's status message (`Error: etcdserver: ...`).

use std::future::Future;
use std::time::Duration;

use anyhow::anyhow;

use super::{CliError, exit};

/// Awaits `call` for at most `timeout`; a status becomes its message, as etcdctl prints it.
pub async fn with_timeout<T>(
    timeout: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, CliError> {
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Err(CliError::with_code(
            exit::ERROR,
            anyhow!("context deadline exceeded"),
        )),
        Ok(Err(status)) => Err(status_error(&status)),
        Ok(Ok(response)) => Ok(response.into_inner()),
    }
}

/// A gRPC status as a CLI error with its message.
pub fn status_error(status: &tonic::Status) -> CliError {
    CliError::with_code(exit::ERROR, anyhow!(status_message(status)))
}

/// What etcdctl prints for a status: the server's message (etcd's `etcdserver: ...` text), or
/// the code when there is none.
pub fn status_message(status: &tonic::Status) -> String {
    if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        status.message().to_owned()
    }
}

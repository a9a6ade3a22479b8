//! The response stream type of the streaming RPCs.

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::Status;

/// A boxed response stream.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

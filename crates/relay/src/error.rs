//! Why a stream cannot be created or read.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error("stream not found or expired")]
    NotFound,
    /// The reader is already past the final event: nothing more will come.
    #[error("the stream has no events after {0}")]
    AtEnd(u64),
    #[error("last event id {0} is beyond the stream's last event")]
    BadPosition(u64),
    /// The global memory bound is reached by live streams; new streams are refused.
    #[error("the relay is at its memory limit; try again shortly")]
    Full,
    /// As many streams are live as the registry allows; new streams are refused.
    #[error("{0} streams are running, the most this gateway runs at once; try again shortly")]
    TooManyStreams(usize),
    /// The stream already has as many readers as one stream may have.
    #[error("the stream already has {0} readers, the most one stream may have")]
    TooManyReaders(usize),
    /// A replica's ID is registered already.
    #[error("the stream is here already")]
    Exists,
}

//! The network edge: the listener and its accept loop, the caps on open connections, the
//! socket under each connection, and the bodies wrapped around each request and response.

/// The request body's deadline and the response body that marks a request done.
mod body;
/// Open client connections: caps, idle eviction, the first request's deadline.
pub mod connections;
/// The accept loop and hyper's connection settings.
mod listener;
/// One accepted connection's socket: TCP options, write deadline, burst coalescing.
pub mod socket;

pub use body::{is_body_timeout, Arrival};
pub use listener::{serve, Serving, MAX_CONN_WRITE_BUFFER};

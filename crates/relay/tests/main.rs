//! The relay's integration tests, one binary (one link, and the tests of every file run in
//! parallel): each former `tests/*.rs` file is a module, sharing `common`.

mod common;

mod abandoned;
mod dialects;
mod live;
mod outcome;
mod registry;
mod resume;
mod sse;

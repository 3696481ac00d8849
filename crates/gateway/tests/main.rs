//! The gateway's integration tests, one binary: the tests whose point is the `sluice` process
//! (the command line, signals and exit codes, the open-file limit, its memory), which cargo
//! builds for this binary ([`sluice_bin`]), and the layout rules of the source tree (`layout`).

mod cli;
mod cli_commands;
mod host_limits;
mod layout;
mod process;

/// The `sluice` binary cargo built along with these tests (no nested build).
fn sluice_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sluice")
}

/// A gateway started as the binary.
fn binary() -> sluice_tests::Builder {
    sluice_tests::Gateway::builder().binary(sluice_bin())
}

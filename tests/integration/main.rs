//! Integration and end-to-end tests of the `authwatch` binary. One test binary, one module per
//! area.

mod common;
mod replay;
mod tooling;

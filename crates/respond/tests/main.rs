//! Contract tests of each adapter against a local HTTP server, and the storm test.
//! One test binary (faster to build and link).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod contract;
mod escalation;
mod hardening;
mod keycloak;
mod live;
mod safety;
mod storm;
mod support;

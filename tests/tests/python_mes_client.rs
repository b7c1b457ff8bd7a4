//! The Python MES client example (`tests/clients/python`) against the real service and real
//! device agents, on stock gRPC packages from PyPI. Its `run` script makes the virtualenv
//! (pinned requirements, with hashes), generates the stubs from `proto/` and runs the test.

mod built;

use std::process::{Command, Stdio};

#[test]
fn python_mes_client_on_stock_grpc() {
    let script = built::repo_root().join("tests/clients/python/run");
    let status = Command::new(&script)
        .env("OXROOT_BIN_DIR", built::bin_dir())
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        status.success(),
        "the Python MES client test failed ({status}); its output is above"
    );
}

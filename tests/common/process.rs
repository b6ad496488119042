//! The `callbridge` binary as a child process: a clean environment, a free
//! port, signals and the exit code.
#![allow(dead_code)]

use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_callbridge");

/// A loopback port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `callbridge` with none of the test runner's `CALLBRIDGE_*`, `NOTIFY_SOCKET`
/// or `WATCHDOG_*` variables.
pub fn clean_command() -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("CALLBRIDGE_") || k == "NOTIFY_SOCKET" || k.starts_with("WATCHDOG_") {
            c.env_remove(k);
        }
    }
    c
}

/// Send `sig` (`-TERM`, `-HUP`, …) to `child` with kill(1).
pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} failed");
}

/// The child's exit code; panics (after killing it) when it has not exited
/// within 30 s, or when a signal ended it.
pub fn wait_exit(child: &mut Child) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().expect("exited with a code, not a signal");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("process did not exit in 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

//! What the benches share: an S3 server on loopback.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The S3 endpoint: `S3DB_TEST_S3_ENDPOINT` when set, else a `.venv/bin/moto_server` started
/// here (stop the returned child when done).
pub fn moto() -> (String, Option<Child>) {
    if let Ok(e) = std::env::var("S3DB_TEST_S3_ENDPOINT") {
        return (e, None);
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let child = Command::new(".venv/bin/moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start .venv/bin/moto_server (run scripts/test once to install it)");
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    (format!("http://127.0.0.1:{port}"), Some(child))
}

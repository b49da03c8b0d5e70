//! `.env.example` works as a `.env` file unchanged, and real environment
//! variables win over it.

mod common;

use std::time::Duration;

use common::{client, sessiond_command};

#[test]
fn env_example_starts_server() {
    let workdir = tempfile::tempdir().expect("temp dir");
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example"))
        .expect("reads");
    std::fs::write(workdir.path().join(".env"), example).expect("writes .env");
    let mut child = sessiond_command(workdir.path())
        .env("SESSIOND_BIND", "127.0.0.1:0")
        .env("SESSIOND_ADMIN_BIND", "127.0.0.1:0")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starts");

    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("piped"));
    let mut line = String::new();
    let mut address = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while address.is_none() && std::time::Instant::now() < deadline {
        line.clear();
        if std::io::BufRead::read_line(&mut stderr, &mut line).unwrap_or(0) == 0 {
            break;
        }
        address = line
            .split_whitespace()
            .find_map(|field| field.strip_prefix("public=http://"))
            .map(str::to_owned);
    }
    let response = address.as_ref().map(|a| {
        client()
            .get(format!("http://{a}/ccstore/v1/metering/session"))
            .send()
    });
    let _ = child.kill();
    let _ = child.wait();

    let address = address.expect("server with .env.example printed its address");
    assert!(
        address.starts_with("127.0.0.1:") && !address.ends_with(":8080"),
        "real env lost to .env: {address}"
    );
    assert_eq!(
        response.expect("requested").expect("response").status(),
        200
    );
    assert!(
        workdir.path().join("keys").is_dir(),
        "keys folder from .env not created"
    );
}

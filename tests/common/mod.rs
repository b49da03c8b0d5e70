//! Shared helpers for tests that start the real `sessiond` binary on free
//! loopback ports with a temporary keys folder.

#![allow(dead_code)]

pub mod tokens;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a server may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Captured stderr of a server, shared with its reader thread.
#[derive(Default)]
struct Output {
    text: Mutex<String>,
    changed: Condvar,
}

/// A running `sessiond` process. Dropping it kills the process.
pub struct TestServer {
    child: Child,
    output: Arc<Output>,
    /// `http://127.0.0.1:PORT` of the public listener.
    pub public: String,
    /// `http://127.0.0.1:PORT` of the admin listener.
    pub admin: String,
    pub keys_dir: PathBuf,
    _workdir: tempfile::TempDir,
}

/// The admin credential of servers started with [`ServerBuilder::admin`].
pub const ADMIN_TOKEN: &str = "test-admin-credential-0123456789abcdef";

/// Options of a server to start.
pub struct ServerBuilder {
    env: Vec<(String, String)>,
    keys_dir: Option<PathBuf>,
    admin: bool,
    /// Files written into the working directory before start, such as `.env`.
    files: Vec<(String, String)>,
}

impl TestServer {
    /// Starts a server with default settings, debug logs and an empty keys folder.
    pub fn start() -> TestServer {
        TestServer::builder().start()
    }

    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            env: Vec::new(),
            keys_dir: None,
            admin: false,
            files: Vec::new(),
        }
    }

    /// Returns the URL of `path` on the public listener.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.public)
    }

    /// Returns the URL of `path` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("{}{path}", self.admin)
    }

    /// Everything the server wrote to stderr so far.
    pub fn logs(&self) -> String {
        self.output.text.lock().expect("log lock").clone()
    }

    /// Waits until the logs contain `needle`; false after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_for(&self.output, needle, timeout)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (for example "HUP" or "TERM") with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerBuilder {
    /// Sets an environment variable of the server.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Enables the admin key operations with [`ADMIN_TOKEN`].
    pub fn admin(mut self) -> Self {
        self.admin = true;
        self
    }

    /// Uses `dir` as the keys folder instead of a new empty one.
    pub fn keys_dir(mut self, dir: &Path) -> Self {
        self.keys_dir = Some(dir.to_path_buf());
        self
    }

    /// Adds a file that `start` writes into the server's working directory.
    pub fn workdir_file(mut self, name: &str, contents: &str) -> Self {
        self.files.push((name.to_owned(), contents.to_owned()));
        self
    }

    /// Starts the server and waits for its listening line.
    pub fn start(self) -> TestServer {
        match self.spawn() {
            Ok(server) => server,
            Err((code, logs)) => panic!("sessiond did not start (exit {code:?}):\n{logs}"),
        }
    }

    /// Starts the server; on failure returns its exit code and output.
    pub fn spawn(self) -> Result<TestServer, (Option<i32>, String)> {
        let workdir = tempfile::tempdir().expect("temp dir");
        let keys_dir = self.keys_dir.unwrap_or_else(|| workdir.path().join("keys"));
        for (name, contents) in &self.files {
            std::fs::write(workdir.path().join(name), contents).expect("writes a workdir file");
        }
        let mut command = sessiond_command(workdir.path());
        command
            .env("SESSIOND_BIND", "127.0.0.1:0")
            .env("SESSIOND_ADMIN_BIND", "127.0.0.1:0")
            .env("SESSIOND_KEYS_DIR", &keys_dir)
            .env("SESSIOND_WORKERS", "2")
            .env("RUST_LOG", "debug")
            .stderr(Stdio::piped())
            .stdout(Stdio::null());
        if self.admin {
            let file = workdir.path().join("admin.token");
            std::fs::write(&file, format!("{ADMIN_TOKEN}\n")).expect("writes admin token");
            command.env("SESSIOND_ADMIN_TOKEN_FILE", &file);
        }
        for (name, value) in &self.env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("sessiond binary starts");

        let output = Arc::new(Output::default());
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut text = sink.text.lock().expect("log lock");
                text.push_str(&line);
                text.push('\n');
                sink.changed.notify_all();
            }
        });

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let logs = output.text.lock().expect("log lock").clone();
            if let Some((public, admin)) = listening_addresses(&logs) {
                return Ok(TestServer {
                    child,
                    output,
                    public,
                    admin,
                    keys_dir,
                    _workdir: workdir,
                });
            }
            if let Some(status) = child.try_wait().expect("try_wait") {
                std::thread::sleep(Duration::from_millis(100));
                let logs = output.text.lock().expect("log lock").clone();
                return Err((status.code(), logs));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err((None, logs));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Builds a `sessiond` command in `workdir` with no `SESSIOND_*` variable of the
/// test's own environment.
pub fn sessiond_command(workdir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sessiond"));
    command.current_dir(workdir);
    for (name, _) in std::env::vars() {
        if name.starts_with("SESSIOND_") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    command
}

fn listening_addresses(logs: &str) -> Option<(String, String)> {
    let line = logs.lines().find(|l| l.contains(" listening public="))?;
    let field = |name: &str| {
        let start = line.find(name)? + name.len();
        let rest = &line[start..];
        Some(rest.split_whitespace().next()?.to_owned())
    };
    Some((field("public=")?, field("admin=")?))
}

fn wait_for(output: &Output, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut text = output.text.lock().expect("log lock");
    loop {
        if text.contains(needle) {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        text = output.changed.wait_timeout(text, left).expect("log lock").0;
    }
}

/// Builds a blocking HTTP client that keeps no cookies and follows no redirects.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client builds")
}

/// Returns the value of our cookie in the `Set-Cookie` header of `response`.
pub fn set_cookie_token(response: &reqwest::blocking::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("session_token-store="))
        .map(|v| v.split(';').next().unwrap_or("").to_owned())
}

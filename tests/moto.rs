//! A moto server (DynamoDB, SQS, KMS, S3 emulator) for the AWS adapters' tests.
//!
//! [`moto`] starts one moto server per test process on a free loopback port, the first time
//! a test asks for it: `infra/moto_server.py` (moto's server with two fixes where moto
//! diverges from AWS; see that file), run by the Python beside `moto_server`, which is looked
//! up on `PATH`, then in the workspace's `.venv/bin` (`bash infra/venv.sh` installs it). When
//! moto is missing the test fails with that instruction rather than being skipped.
//!
//! Nobody has to stop it: the server runs under a small `sh` watchdog that kills it as soon as
//! the test process is gone (whether it exited, panicked or was killed by nextest's timeout),
//! so no moto outlives `cargo nextest run`. [`Moto::stop`] stops it early, by process group.
//! Tests share the server but never its resources: every table and queue name is unique.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a fresh moto server gets to answer.
pub const MOTO_START_TIMEOUT: Duration = Duration::from_secs(30);
/// The region every test client uses.
pub const REGION: &str = "us-east-1";

#[derive(Debug)]
pub struct Moto {
    port: u16,
    child: Mutex<Option<Child>>,
    log: PathBuf,
}

/// `moto_server` on `PATH` or in `<workspace>/.venv/bin`.
pub fn moto_server_binary() -> Result<PathBuf, String> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("moto_server")).collect::<Vec<_>>())
        .unwrap_or_default();
    let venv = crate::workspace_root().join(".venv").join("bin").join("moto_server");
    on_path.into_iter().chain([venv.clone()]).find(|p| p.is_file()).ok_or_else(|| {
        format!(
            "moto_server is not installed (looked on PATH and at {}): run `bash infra/venv.sh` \
             (it installs moto[server] from infra/requirements.txt) and try again",
            venv.display()
        )
    })
}

/// The Python interpreter that has moto installed: the one beside `moto_server`.
pub fn moto_python() -> Result<PathBuf, String> {
    let server = moto_server_binary()?;
    let python = server.with_file_name("python");
    if python.is_file() {
        Ok(python)
    } else {
        Err(format!("{} has no python beside it; run `bash infra/venv.sh`", server.display()))
    }
}

/// This process's moto server, started on first use. Panics (failing the test) when moto
/// is missing or does not come up.
pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let mut last = String::new();
        for _ in 0..3 {
            match Moto::start() {
                Ok(m) => return m,
                Err(e) => last = e,
            }
        }
        panic!("{last}")
    })
}

impl Moto {
    /// A new moto server of its own (most tests share [`moto`] instead).
    pub fn start() -> Result<Moto, String> {
        let python = moto_python()?;
        let script_path = crate::workspace_root().join("infra").join("moto_server.py");
        let port = crate::free_port();
        let log = std::env::temp_dir().join(format!("baton-moto-{}-{port}.log", std::process::id()));
        let out = std::fs::File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| format!("clone a file handle: {e}"))?;
        // The watchdog: runs moto, and kills it once the test process ($1) is gone.
        let script = r#"
            "$2" "$3" -H 127.0.0.1 -p "$4" & m=$!
            trap 'kill $m 2>/dev/null; exit 0' TERM INT HUP
            while kill -0 "$1" 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 0.5; done
            kill $m 2>/dev/null
        "#;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(script)
            .arg("moto-watchdog")
            .arg(std::process::id().to_string())
            .arg(&python)
            .arg(&script_path)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        let child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", python.display()))?;
        let moto = Moto { port, child: Mutex::new(Some(child)), log };
        let t0 = Instant::now();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(moto);
            }
            let exited = moto.child.lock().unwrap().as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || t0.elapsed() > MOTO_START_TIMEOUT {
                let log = std::fs::read_to_string(&moto.log).unwrap_or_default();
                moto.stop();
                return Err(format!(
                    "moto (infra/moto_server.py) did not come up on {addr} within {MOTO_START_TIMEOUT:?}:\n{log}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SDK configuration for this server (region [`REGION`], dummy credentials).
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        baton::aws::local_sdk_config(&self.endpoint(), REGION).await
    }

    /// Stops the server and its watchdog (SIGKILL to their process group).
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The S3 SDK's client for moto: an independent reader of what Baton's own signed S3
/// requests (`baton::adapters::s3::S3Client`) wrote.
pub fn sdk_s3(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(config).force_path_style(true).build())
}

/// The keys and sizes of the objects in `bucket`, sorted.
pub async fn list_objects(config: &aws_config::SdkConfig, bucket: &str) -> Vec<(String, i64)> {
    let out = sdk_s3(config).list_objects_v2().bucket(bucket).send().await.expect("ListObjectsV2 on moto");
    let mut v: Vec<(String, i64)> = out
        .contents()
        .iter()
        .map(|o| (o.key().unwrap_or_default().to_string(), o.size().unwrap_or_default()))
        .collect();
    v.sort();
    v
}

/// A name no other test uses (table or queue names: letters, digits, `-`).
pub fn unique_name(tag: &str) -> String {
    format!("{tag}-{}", ulid::Ulid::new().to_string().to_ascii_lowercase())
}

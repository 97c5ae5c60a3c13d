//! Shared by the CLI's process tests: `serve --sandbox` as a child process, and
//! `history --json` read back from its data directory.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_circleci-triggers");

/// A running `serve --sandbox` (sped up 20×, on a free loopback port); killed when dropped.
pub struct SandboxProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`, from the `listening on` line.
    pub url: String,
    /// Everything printed before `listening on`.
    pub banner: String,
    later: Option<mpsc::Receiver<String>>,
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SandboxProcess {
    pub fn start(config: &Path, data: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(config, data, extra, &[])
    }

    /// [`SandboxProcess::start`] with extra environment variables.
    pub fn start_with_env(
        config: &Path,
        data: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut child = Command::new(BIN)
            .envs(env.iter().copied())
            .args(["serve", "--sandbox", "--sandbox-speed", "20", "--config"])
            .arg(config)
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut banner = String::new();
        let url = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                panic!("serve --sandbox ended before listening:\n{banner}");
            };
            if let Some(url) = line.strip_prefix("listening on ") {
                break url.trim().to_owned();
            }
            banner.push_str(&line);
            banner.push('\n');
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        let (sender, later) = mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        Self {
            child,
            url,
            banner,
            later: Some(later),
        }
    }

    /// The banner's line starting with `prefix`, without it.
    pub fn banner_value(&self, prefix: &str) -> Option<String> {
        self.banner
            .lines()
            .find_map(|line| line.strip_prefix(prefix))
            .map(|value| value.trim().to_owned())
    }

    /// The lines printed after `listening on` (once).
    pub fn take_output(&mut self) -> mpsc::Receiver<String> {
        self.later.take().expect("the output is taken once")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().unwrap()
    }
}

/// `history --json [extra] --data DATA`, parsed; the command must succeed.
pub fn history_json(data: &Path, extra: &[&str]) -> Vec<Value> {
    let output = Command::new(BIN)
        .args(["history", "--json"])
        .args(extra)
        .arg("--data")
        .arg(data)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice::<Value>(&output.stdout)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap()
}

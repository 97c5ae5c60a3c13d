//! A dedicated moto_server process for one test, stopped when the guard is dropped.
//!
//! Fault tests cut the network between the SDK and moto; a moto of their own keeps their
//! traffic (and their failures) away from the shared instance of `./scripts/test`. moto keeps
//! its state in memory, so the process lives as long as the guard and is never restarted.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long moto_server may take to answer after it was started (it is a Python program
/// starting on a loaded machine).
const STARTUP_LIMIT: Duration = Duration::from_secs(30);

/// A running moto_server; dropping it kills the process.
pub struct MotoProcess {
    child: Child,
    addr: SocketAddr,
}

impl Drop for MotoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl MotoProcess {
    /// Starts `moto_server -H 127.0.0.1 -p <free port>` and waits until it answers.
    /// Panics with instructions when moto_server is not on PATH.
    pub async fn start() -> MotoProcess {
        let port = free_port();
        let child = match Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(error) => panic!(
                "cannot start moto_server ({error}): the fault tests start their own moto_server \
                 and need it on PATH. Install it with `python3 -m pip install 'moto[server]'` \
                 (./scripts/test does this) and make sure `moto_server` is found."
            ),
        };
        let mut process = MotoProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        process.wait_until_ready().await;
        process
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn wait_until_ready(&mut self) {
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "moto_server exited during startup ({status}) on {}",
                    self.addr
                );
            }
            // moto answers its own dashboard API once the server is up.
            let probe = http
                .get(format!("{}/moto-api/data.json", self.url()))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if probe.is_ok() {
                return;
            }
            assert!(
                started.elapsed() < STARTUP_LIMIT,
                "moto_server did not answer on {} within {STARTUP_LIMIT:?}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A port nobody listens on right now (the OS picks it; tiny race with other processes).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// SDK configuration for `endpoint` (moto, or a proxy in front of it) that fails fast when
/// the connection is cut: one attempt, short connect and per-attempt timeouts. A fault test
/// wants the outage to surface as an error at once, not after the SDK's default retries.
pub async fn fast_failing_sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    let base = crate::moto::sdk_config_for(endpoint).await;
    base.into_builder()
        .retry_config(aws_smithy_types::retry::RetryConfig::standard().with_max_attempts(1))
        .timeout_config(
            aws_smithy_types::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_millis(500))
                .operation_attempt_timeout(Duration::from_secs(2))
                .operation_timeout(Duration::from_secs(3))
                .build(),
        )
        .build()
}

/// An SDK interceptor that counts the requests a client transmits and, when armed, cuts a
/// [`SwitchableProxy`](crate::tcp_proxy::SwitchableProxy) right before request number `n`
/// (0-based) is sent: that request and every later one fail, every earlier one succeeded.
/// Armed with [`CutAtRequest::arm_lost_answer`], request `n` still reaches the upstream
/// (and takes effect) but its answer is lost; the cut starts with request `n + 1`.
/// Attach with `.interceptor(cutter.clone())` on the client's config builder.
#[derive(Debug, Clone)]
pub struct CutAtRequest {
    switch: crate::tcp_proxy::ProxySwitch,
    sent: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    cut_at: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    lose_answer: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CutAtRequest {
    pub fn new(switch: crate::tcp_proxy::ProxySwitch) -> Self {
        Self {
            switch,
            sent: Default::default(),
            cut_at: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX)),
            lose_answer: Default::default(),
        }
    }

    /// Starts counting from zero again; cuts before request `n` of the new count.
    pub fn arm(&self, n: usize) {
        use std::sync::atomic::Ordering::SeqCst;
        self.sent.store(0, SeqCst);
        self.lose_answer.store(false, SeqCst);
        self.cut_at.store(n, SeqCst);
    }

    /// Starts counting from zero again; request `n` takes effect but its answer is lost,
    /// and the cut starts with request `n + 1`.
    pub fn arm_lost_answer(&self, n: usize) {
        use std::sync::atomic::Ordering::SeqCst;
        self.arm(n);
        self.lose_answer.store(true, SeqCst);
    }

    /// Starts counting from zero again, without cutting.
    pub fn disarm(&self) {
        self.arm(usize::MAX);
    }

    /// Requests transmitted (attempted) since the last `arm` / `disarm`.
    pub fn sent(&self) -> usize {
        self.sent.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl aws_smithy_runtime_api::client::interceptors::Intercept for CutAtRequest {
    fn name(&self) -> &'static str {
        "CutAtRequest"
    }

    fn read_before_transmit(
        &self,
        _context: &aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        _cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        use std::sync::atomic::Ordering::SeqCst;
        let number = self.sent.fetch_add(1, SeqCst);
        let cut_at = self.cut_at.load(SeqCst);
        if self.lose_answer.load(SeqCst) {
            if number == cut_at {
                self.switch.lose_answers();
            } else if cut_at != usize::MAX && number == cut_at + 1 {
                self.switch.cut();
            }
        } else if number == cut_at {
            self.switch.cut();
        }
        Ok(())
    }
}

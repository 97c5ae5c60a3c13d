//! A switchable loopback TCP proxy for fault tests: it forwards bytes both ways between
//! its clients and one upstream until the test cuts it.
//!
//! - [`SwitchableProxy::cut`] drops every live connection and closes each new one at once
//!   (the client sees a reset / closed connection: fails fast);
//! - [`SwitchableProxy::blackhole`] drops every live connection and accepts new ones without
//!   ever answering (the client sees a timeout);
//! - [`SwitchableProxy::lose_answers`] still forwards requests (they take effect upstream)
//!   but drops each connection as soon as the upstream answers: the client never learns
//!   the outcome of a write that happened;
//! - [`SwitchableProxy::restore`] forwards again.
//!
//! The switch is synchronous and takes effect for every byte forwarded after it returns:
//! each forwarding loop checks the state before writing a chunk, so a test can cut from
//! inside an SDK interceptor right before a request is transmitted and know that exactly
//! that request (and every later one) does not reach the upstream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Forward,
    /// Live connections dropped; new ones closed as soon as they are accepted.
    Cut,
    /// Live connections dropped; new ones accepted and never answered.
    Blackhole,
    /// Requests reach the upstream; its answers are dropped with the connection.
    LoseAnswers,
}

impl Mode {
    /// Whether bytes from the client may reach the upstream.
    fn passes_requests(self) -> bool {
        matches!(self, Mode::Forward | Mode::LoseAnswers)
    }
}

struct Shared {
    mode: watch::Sender<Mode>,
    accepted: AtomicUsize,
    refused: AtomicUsize,
}

/// A running proxy; dropping it stops accepting and closes every connection.
pub struct SwitchableProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Drop for SwitchableProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        // Wakes the connection tasks, which end when they see the proxy stopped.
        self.shared.mode.send_replace(Mode::Cut);
    }
}

impl SwitchableProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `upstream` (`host:port`).
    pub async fn start(upstream: SocketAddr) -> std::io::Result<SwitchableProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, _) = watch::channel(Mode::Forward);
        let shared = Arc::new(Shared {
            mode,
            accepted: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
        });
        let accept_task = tokio::spawn(accept_loop(listener, upstream, shared.clone()));
        Ok(SwitchableProxy {
            addr,
            shared,
            accept_task,
        })
    }

    /// Starts a proxy in front of an `http://host:port` URL.
    pub async fn in_front_of(url: &str) -> std::io::Result<SwitchableProxy> {
        let authority = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let upstream = tokio::net::lookup_host(authority.as_str())
            .await?
            .next()
            .ok_or_else(|| std::io::Error::other(format!("cannot resolve {authority}")))?;
        Self::start(upstream).await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn mode(&self) -> Mode {
        *self.shared.mode.borrow()
    }

    /// Drops every live connection; new ones are closed at once.
    pub fn cut(&self) {
        self.shared.mode.send_replace(Mode::Cut);
    }

    /// Drops every live connection; new ones hang unanswered.
    pub fn blackhole(&self) {
        self.shared.mode.send_replace(Mode::Blackhole);
    }

    /// Requests still reach the upstream; every answer is lost with its connection.
    pub fn lose_answers(&self) {
        self.shared.mode.send_replace(Mode::LoseAnswers);
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.shared.mode.send_replace(Mode::Forward);
    }

    /// A handle that can switch the proxy from elsewhere (e.g. an SDK interceptor).
    pub fn switch(&self) -> ProxySwitch {
        ProxySwitch(self.shared.clone())
    }

    /// Connections accepted and forwarded so far.
    pub fn forwarded_connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections closed or held unanswered because the proxy was cut.
    pub fn refused_connections(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }
}

/// A cloneable switch of one proxy.
#[derive(Clone)]
pub struct ProxySwitch(Arc<Shared>);

impl std::fmt::Debug for ProxySwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ProxySwitch")
            .field(&*self.0.mode.borrow())
            .finish()
    }
}

impl ProxySwitch {
    pub fn cut(&self) {
        self.0.mode.send_replace(Mode::Cut);
    }

    pub fn blackhole(&self) {
        self.0.mode.send_replace(Mode::Blackhole);
    }

    pub fn lose_answers(&self) {
        self.0.mode.send_replace(Mode::LoseAnswers);
    }

    pub fn restore(&self) {
        self.0.mode.send_replace(Mode::Forward);
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let mode = *shared.mode.borrow();
        match mode {
            Mode::Forward | Mode::LoseAnswers => {
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(forward(client, upstream, shared.mode.subscribe()));
            }
            Mode::Cut => {
                shared.refused.fetch_add(1, Ordering::SeqCst);
                drop(client);
            }
            Mode::Blackhole => {
                shared.refused.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(hold_until_switched(client, shared.mode.subscribe()));
            }
        }
    }
}

/// Keeps a connection open without reading or answering until the mode changes again.
async fn hold_until_switched(client: TcpStream, mut mode: watch::Receiver<Mode>) {
    mode.borrow_and_update();
    let _ = mode.changed().await;
    drop(client);
}

async fn forward(client: TcpStream, upstream: SocketAddr, mode: watch::Receiver<Mode>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let mut watch_cut = mode.clone();
    let pump = async {
        tokio::select! {
            () = pipe(client_read, server_write, mode.clone(), Mode::passes_requests) => {}
            () = pipe(server_read, client_write, mode.clone(), |mode| mode == Mode::Forward) => {}
        }
    };
    tokio::select! {
        () = pump => {}
        () = until_requests_stop(&mut watch_cut) => {}
    }
    // Both halves of both sockets are dropped here: the connection is gone.
}

async fn until_requests_stop(mode: &mut watch::Receiver<Mode>) {
    loop {
        if !mode.borrow_and_update().passes_requests() {
            return;
        }
        if mode.changed().await.is_err() {
            return;
        }
    }
}

/// Copies one direction; ends (dropping the connection) at the first chunk that `allowed`
/// refuses in the mode of the moment.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mode: watch::Receiver<Mode>,
    allowed: fn(Mode) -> bool,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if !allowed(*mode.borrow()) {
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// An upstream that echoes every byte back.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, text: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(text).await?;
        let mut answer = vec![0u8; text.len()];
        stream.read_exact(&mut answer).await?;
        Ok(answer)
    }

    /// Reads until the peer closes (or fails); true when the connection ended.
    async fn ends_within(stream: &mut TcpStream, limit: Duration) -> bool {
        let mut buffer = [0u8; 64];
        matches!(
            tokio::time::timeout(limit, stream.read(&mut buffer)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn cut_drops_an_open_connection_and_refuses_new_ones() {
        let proxy = SwitchableProxy::start(echo_server().await).await.unwrap();
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut open, b"before").await.unwrap(), b"before");

        proxy.cut();
        assert!(
            ends_within(&mut open, Duration::from_secs(5)).await,
            "the live connection must be dropped by cut()"
        );
        // A new connection is accepted by the kernel but closed without an answer.
        let mut late = TcpStream::connect(proxy.addr()).await.unwrap();
        let _ = late.write_all(b"during").await;
        assert!(ends_within(&mut late, Duration::from_secs(5)).await);
        assert_eq!(proxy.forwarded_connections(), 1);
        assert_eq!(proxy.refused_connections(), 1);
    }

    #[tokio::test]
    async fn restore_lets_a_new_connection_through() {
        let proxy = SwitchableProxy::start(echo_server().await).await.unwrap();
        proxy.cut();
        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(ends_within(&mut refused, Duration::from_secs(5)).await);

        proxy.restore();
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut fresh, b"after").await.unwrap(), b"after");
        assert_eq!(proxy.mode(), Mode::Forward);
    }

    #[tokio::test]
    async fn a_blackholed_connection_gets_no_answer_until_restored() {
        let proxy = SwitchableProxy::start(echo_server().await).await.unwrap();
        proxy.blackhole();
        let mut held = TcpStream::connect(proxy.addr()).await.unwrap();
        held.write_all(b"lost").await.unwrap();
        let mut buffer = [0u8; 4];
        let waited = tokio::time::timeout(Duration::from_millis(200), held.read(&mut buffer)).await;
        assert!(waited.is_err(), "a blackholed connection must not answer");

        proxy.restore();
        // The held connection is closed (its bytes never reached the upstream) ...
        assert!(ends_within(&mut held, Duration::from_secs(5)).await);
        // ... and new connections are forwarded again.
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut fresh, b"back").await.unwrap(), b"back");
    }

    #[tokio::test]
    async fn a_lost_answer_still_delivers_the_request() {
        // An upstream that records what it received and answers "ok".
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = listener.local_addr().unwrap();
        let (received_tx, mut received_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let received_tx = received_tx.clone();
                tokio::spawn(async move {
                    let mut buffer = [0u8; 5];
                    if stream.read_exact(&mut buffer).await.is_ok() {
                        received_tx.send(buffer.to_vec()).unwrap();
                        let _ = stream.write_all(b"ok").await;
                    }
                });
            }
        });
        let proxy = SwitchableProxy::start(upstream).await.unwrap();
        proxy.lose_answers();
        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        client.write_all(b"write").await.unwrap();
        assert_eq!(received_rx.recv().await.unwrap(), b"write");
        assert!(ends_within(&mut client, Duration::from_secs(5)).await);
    }

    #[tokio::test]
    async fn a_switch_cuts_before_the_next_chunk_is_forwarded() {
        let proxy = SwitchableProxy::start(echo_server().await).await.unwrap();
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut open, b"one").await.unwrap(), b"one");
        // Cut through a switch handle, then write at once: the bytes must not come back.
        proxy.switch().cut();
        let _ = open.write_all(b"two").await;
        assert!(ends_within(&mut open, Duration::from_secs(5)).await);
    }
}

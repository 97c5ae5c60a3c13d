//! DynamoDB and Secrets Manager on moto_server: the one named by `AWS_ENDPOINT_URL`, or one
//! this process starts on a free loopback port (and stops when dropped).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::config::{Credentials, Region};

pub const REGION: &str = "us-east-1";
pub const ACCESS_KEY: &str = "test";

pub struct Moto {
    pub endpoint: String,
    pub aws: aws_config::SdkConfig,
    server: Option<Child>,
}

impl Moto {
    pub async fn start() -> anyhow::Result<Moto> {
        let (endpoint, server) = match std::env::var("AWS_ENDPOINT_URL") {
            Ok(url) if !url.is_empty() => (url, None),
            _ => {
                let port = free_port()?;
                let child = Command::new("moto_server")
                    .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|error| {
                        anyhow::anyhow!(
                            "cannot start moto_server ({error}): install it (`pip install \
                             'moto[server]'`) or set AWS_ENDPOINT_URL to a running one"
                        )
                    })?;
                eprintln!("started moto_server (pid {}) on port {port}", child.id());
                (format!("http://127.0.0.1:{port}"), Some(child))
            }
        };
        let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&endpoint)
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new(
                ACCESS_KEY, ACCESS_KEY, None, None, "bench",
            ))
            .load()
            .await;
        let moto = Moto {
            endpoint,
            aws,
            server,
        };
        moto.wait_ready().await?;
        Ok(moto)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if http
                .get(format!("{}/moto-api/", self.endpoint))
                .send()
                .await
                .is_ok()
            {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "moto_server at {} did not answer within 30 s",
                self.endpoint
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn dynamo(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.aws)
    }

    pub fn secrets_manager(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.aws)
    }

    /// A new table of the project's definition, named uniquely.
    pub async fn new_table(&self, prefix: &str) -> anyhow::Result<String> {
        let name = format!("{prefix}-{}", uuid::Uuid::new_v4().simple());
        shared::store::dynamo::create_table(&self.dynamo(), &name).await?;
        Ok(name)
    }

    /// A new secret (uniquely named) holding `value`; returns its name.
    pub async fn new_secret(&self, prefix: &str, value: &str) -> anyhow::Result<String> {
        let name = format!("{prefix}-{}", uuid::Uuid::new_v4().simple());
        self.secrets_manager()
            .create_secret()
            .name(&name)
            .secret_string(value)
            .send()
            .await?;
        Ok(name)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(child) = &mut self.server {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

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
    /// The partition-parallel stand-in's second server and its router (see
    /// [`Moto::start_partitioned`]).
    partitioned: Option<(Child, tokio::task::JoinHandle<()>)>,
}

impl Moto {
    pub async fn start() -> anyhow::Result<Moto> {
        let (endpoint, server) = match std::env::var("AWS_ENDPOINT_URL") {
            Ok(url) if !url.is_empty() => (url, None),
            _ => {
                let (endpoint, child) = spawn_moto()?;
                (endpoint, Some(child))
            }
        };
        Self::at(endpoint, server, None).await
    }

    /// A stand-in that serves requests to different partitions at the same time, as
    /// DynamoDB does and one moto_server (one Python process, one request at a time) does
    /// not: two moto_servers behind a router that sends the pipeline bindings'
    /// partitions (`PIPELINE#…`: their `PutItem`s and `GetItem`s, which nothing else
    /// touches) to the second and everything else to the first (tables are created on
    /// both). It changes no request count, only whether two requests to different
    /// partitions may overlap.
    pub async fn start_partitioned() -> anyhow::Result<Moto> {
        let (main, main_child) = spawn_moto()?;
        let (bindings, bindings_child) = spawn_moto()?;
        for endpoint in [&main, &bindings] {
            wait_ready(endpoint).await?;
        }
        let (endpoint, router) = partition_router::start(main, bindings).await?;
        Self::at(endpoint, Some(main_child), Some((bindings_child, router))).await
    }

    async fn at(
        endpoint: String,
        server: Option<Child>,
        partitioned: Option<(Child, tokio::task::JoinHandle<()>)>,
    ) -> anyhow::Result<Moto> {
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
            partitioned,
        };
        wait_ready(&moto.endpoint).await?;
        Ok(moto)
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
        if let Some((child, router)) = &mut self.partitioned {
            router.abort();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts a moto_server on a free loopback port: its endpoint and process.
fn spawn_moto() -> anyhow::Result<(String, Child)> {
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
    Ok((format!("http://127.0.0.1:{port}"), child))
}

async fn wait_ready(endpoint: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if http
            .get(format!("{endpoint}/moto-api/"))
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "moto_server at {endpoint} did not answer within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The partition-parallel stand-in's router (see [`Moto::start_partitioned`]).
mod partition_router {
    use std::sync::Arc;

    use axum::body::to_bytes;
    use axum::extract::{Request, State};
    use axum::response::Response;
    use integration_tests::http_forward;
    use serde_json::Value;

    struct Upstreams {
        main: String,
        bindings: String,
        client: reqwest::Client,
    }

    /// Where one request goes.
    #[derive(Debug, PartialEq, Eq)]
    pub(super) enum Route {
        Main,
        Bindings,
        /// Table definitions: both servers hold every table.
        Both,
    }

    /// Binding items (`pk` = `PIPELINE#…`) are only read and written one at a time, by key;
    /// every other request stays on the main server.
    pub(super) fn route(target: Option<&str>, body: &[u8]) -> Route {
        let Some(operation) = target.and_then(|t| t.strip_prefix("DynamoDB_20120810.")) else {
            return Route::Main;
        };
        match operation {
            "CreateTable" | "DeleteTable" | "UpdateTimeToLive" => Route::Both,
            "PutItem" | "GetItem" | "UpdateItem" | "DeleteItem" => {
                let request: Value = serde_json::from_slice(body).unwrap_or_default();
                let pk = request["Item"]["pk"]["S"]
                    .as_str()
                    .or_else(|| request["Key"]["pk"]["S"].as_str());
                if pk.is_some_and(|pk| pk.starts_with("PIPELINE#")) {
                    Route::Bindings
                } else {
                    Route::Main
                }
            }
            _ => Route::Main,
        }
    }

    pub(super) async fn start(
        main: String,
        bindings: String,
    ) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(Upstreams {
            main,
            bindings,
            client: reqwest::Client::new(),
        });
        let app = axum::Router::new().fallback(forward).with_state(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok((url, task))
    }

    async fn forward(State(upstreams): State<Arc<Upstreams>>, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let Ok(body) = to_bytes(body, usize::MAX).await else {
            return http_forward::bad_gateway("unreadable request body");
        };
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let target = parts
            .headers
            .get("x-amz-target")
            .and_then(|value| value.to_str().ok());
        let send = |base: &str| {
            http_forward::forward(
                &upstreams.client,
                parts.method.clone(),
                format!("{base}{path}"),
                &parts.headers,
                body.clone(),
            )
        };
        match route(target, &body) {
            Route::Main => send(&upstreams.main).await,
            Route::Bindings => send(&upstreams.bindings).await,
            Route::Both => {
                let _ = send(&upstreams.bindings).await;
                send(&upstreams.main).await
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::{Route, route};

        #[test]
        fn bindings_go_to_their_own_server_and_tables_to_both() {
            let put =
                br#"{"TableName":"t","Item":{"pk":{"S":"PIPELINE#42"},"sk":{"S":"PIPELINE"}}}"#;
            let get =
                br#"{"TableName":"t","Key":{"pk":{"S":"PIPELINE#42"},"sk":{"S":"PIPELINE"}}}"#;
            let settle =
                br#"{"TableName":"t","Key":{"pk":{"S":"TRIGGER#1"},"sk":{"S":"TRIGGER"}}}"#;
            let dynamo = |op: &str| format!("DynamoDB_20120810.{op}");
            assert_eq!(route(Some(&dynamo("PutItem")), put), Route::Bindings);
            assert_eq!(route(Some(&dynamo("GetItem")), get), Route::Bindings);
            assert_eq!(route(Some(&dynamo("UpdateItem")), settle), Route::Main);
            assert_eq!(route(Some(&dynamo("Query")), get), Route::Main);
            assert_eq!(route(Some(&dynamo("CreateTable")), b"{}"), Route::Both);
            assert_eq!(
                route(Some("secretsmanager.GetSecretValue"), b"{}"),
                Route::Main
            );
            assert_eq!(route(None, b""), Route::Main);
        }
    }
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

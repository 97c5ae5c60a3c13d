//! The reqwest adapter of the [`CircleCi`] port.
//!
//! Every call goes through one loop ([`CircleCiClient::execute`]): wait for the token's turn
//! (pacing), send with the time left before the deadline, then decide from the answer:
//!
//! | answer                              | read / idempotent      | call with side effects |
//! |-------------------------------------|------------------------|------------------------|
//! | connection refused (never sent)     | retry (backoff)        | retry (backoff)        |
//! | 429                                 | wait `Retry-After` / backoff, retry | same      |
//! | 401                                 | re-read the token once; resend if it changed | same |
//! | 5xx                                 | retry (backoff)        | **ambiguous**, no resend |
//! | timeout / reset after sending       | retry (backoff)        | **ambiguous**, no resend |
//! | other 4xx                           | typed error            | typed error            |
//!
//! All of it is bounded by the attempt limit and the call's deadline; a wait that would end
//! after the deadline is not started.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use subtle::ConstantTimeEq;
use tokio::time::Instant;
use uuid::Uuid;

use super::CircleCi;
use super::error::CircleCiError;
use super::model::{
    CreatedPipeline, Job, Pipeline, PipelineQuery, Project, Rerun, User, Webhook, Workflow,
};
use super::pacing::{
    BucketState, Pacer, PacingRefused, RateDefaults, RateLimitHeaders, Turn, backoff_ceiling,
    full_jitter, retry_after,
};
use super::request::{NewWebhook, PipelineRequest, WebhookUpdate, project_path, rerun_body};
use crate::config::{ProjectSlug, rules::check_git_ref};
use crate::secrets::{SecretKind, Secrets, SecretsError};

/// Timeouts, retries and pacing of a [`CircleCiClient`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Each call (all its attempts and waits) ends by then, unless
    /// [`CircleCiClient::with_deadline`] set an absolute deadline.
    pub deadline: Duration,
    /// One attempt, from connecting to the last byte of the body.
    pub request_timeout: Duration,
    /// Kept below `request_timeout`, so an unreachable host is reported as "never sent".
    pub connect_timeout: Duration,
    /// Sends per call, the first one included.
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// The pace assumed for a token until CircleCI's headers say otherwise.
    pub rate: RateDefaults,
    /// Upper bound on pages read by a list call.
    pub max_pages: usize,
    pub user_agent: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            max_attempts: 5,
            backoff_base: Duration::from_millis(250),
            backoff_cap: Duration::from_secs(8),
            rate: RateDefaults::default(),
            max_pages: 20,
            user_agent: concat!("circleci-triggers/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// Whether sending a request twice can do harm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// GET, and PUT of a whole value: repeating it changes nothing.
    Repeatable,
    /// Creates, reruns, approvals, cancels: resent only when provably not received.
    Once,
}

struct Call<'a> {
    operation: &'static str,
    method: Method,
    path: String,
    query: Vec<(&'static str, String)>,
    body: Option<Value>,
    token: &'a str,
    effect: Effect,
}

struct Reply {
    status: StatusCode,
    body: Bytes,
}

struct Inner {
    http: reqwest::Client,
    base: String,
    secrets: Arc<dyn Secrets>,
    options: ClientOptions,
    pacer: Pacer,
}

/// The CircleCI API v2 over HTTPS (reqwest + rustls).
///
/// Cheap to clone: clones share the connection pool and the pacing buckets.
#[derive(Clone)]
pub struct CircleCiClient {
    inner: Arc<Inner>,
    deadline: Option<Instant>,
}

impl std::fmt::Debug for CircleCiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircleCiClient")
            .field("base", &self.inner.base)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl CircleCiClient {
    /// `base_url` is the API v2 root (`https://circleci.com/api/v2`, a server install, or the
    /// simulator). Plain http is refused except for loopback hosts: the token travels in a header.
    pub fn new(
        base_url: &str,
        secrets: Arc<dyn Secrets>,
        options: ClientOptions,
    ) -> Result<Self, CircleCiError> {
        let base = base_url.trim_end_matches('/').to_owned();
        let parsed = Url::parse(&base).map_err(|error| CircleCiError::Configuration {
            reason: format!("base URL `{base}`: {error}"),
        })?;
        let loopback = matches!(parsed.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        match parsed.scheme() {
            "https" => {}
            "http" if loopback => {}
            scheme => {
                return Err(CircleCiError::Configuration {
                    reason: format!(
                        "base URL `{base}`: scheme `{scheme}` is not allowed (https, or http on localhost)"
                    ),
                });
            }
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(CircleCiError::Configuration {
                reason: format!("base URL `{base}` must not have a query or fragment"),
            });
        }
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .user_agent(options.user_agent.clone())
            // Our own loop decides what is safe to resend; nothing below it may resend.
            .retry(reqwest::retry::never())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| CircleCiError::Configuration {
                reason: format!("HTTP client: {error}"),
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                secrets,
                pacer: Pacer::new(options.rate),
                options,
            }),
            deadline: None,
        })
    }

    /// The same client, with every call bounded by `deadline` (e.g. the Lambda's own).
    pub fn with_deadline(&self, deadline: Instant) -> Self {
        Self {
            inner: self.inner.clone(),
            deadline: Some(deadline),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// The pacing state of one token (capacity, tokens left, rate), for logs and tests.
    pub fn pacing(&self, token: &str) -> BucketState {
        self.inner.pacer.state(token)
    }

    fn call_deadline(&self) -> Instant {
        self.deadline
            .unwrap_or_else(|| Instant::now() + self.inner.options.deadline)
    }

    async fn token(&self, name: &str) -> Result<SecretString, CircleCiError> {
        self.inner
            .secrets
            .circleci_token(name)
            .await
            .map_err(|source| CircleCiError::Token {
                token: name.to_owned(),
                source,
            })
    }

    fn url(&self, call: &Call<'_>) -> Result<Url, CircleCiError> {
        let mut url =
            Url::parse(&format!("{}{}", self.inner.base, call.path)).map_err(|error| {
                CircleCiError::invalid(format!(
                    "cannot build the URL for {}: {error}",
                    call.operation
                ))
            })?;
        if !call.query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in &call.query {
                pairs.append_pair(name, value);
            }
        }
        Ok(url)
    }

    /// Sends `call` until it gets an answer worth returning; see the module docs.
    async fn execute(&self, call: &Call<'_>) -> Result<Reply, CircleCiError> {
        // Inside an action's budget, the call gets at most what the action has left.
        let budget = super::SendBudget::current();
        let deadline = match &budget {
            Some(budget) => self.call_deadline().min(budget.deadline()),
            None => self.call_deadline(),
        };
        let url = self.url(call)?;
        let mut token = self.token(call.token).await?;
        let mut header = token_header(call.token, &token)?;
        let mut token_reread = false;
        let mut sends: u32 = 0;
        let mut failures: u32 = 0;
        loop {
            let mut turn = self
                .inner
                .pacer
                .acquire(call.token, deadline)
                .await
                .map_err(|refused| pacing_error(call, refused))?;
            if budget.as_ref().is_some_and(super::SendBudget::passed) {
                // Frozen or slow past the action's deadline: the claim may have been adopted
                // and the request made by someone else. Not sent, so nothing happened.
                return Err(timeout(
                    call,
                    "the action's deadline passed before the request was sent",
                ));
            }
            let Some(left) = deadline
                .checked_duration_since(Instant::now())
                .filter(|left| !left.is_zero())
            else {
                return Err(timeout(
                    call,
                    "the deadline passed before the request was sent",
                ));
            };
            let attempt_timeout = self.inner.options.request_timeout.min(left);
            sends += 1;
            let outcome = self.send_once(call, &url, &header, attempt_timeout).await;
            let next = self.classify(call, &mut turn, outcome, failures);
            drop(turn);
            match next {
                Next::Done(result) => return result,
                Next::Reread { give_up } => {
                    if token_reread || sends >= self.inner.options.max_attempts {
                        return Err(give_up);
                    }
                    // The token may have been rotated since it was cached: read it once more,
                    // and resend only if it changed (the same token would fail the same way).
                    token_reread = true;
                    self.inner.secrets.refresh(SecretKind::CircleCiTokens).await;
                    let fresh = self.token(call.token).await?;
                    let unchanged = bool::from(
                        fresh
                            .expose_secret()
                            .as_bytes()
                            .ct_eq(token.expose_secret().as_bytes()),
                    );
                    if unchanged {
                        return Err(give_up);
                    }
                    tracing::info!(
                        operation = call.operation,
                        token = call.token,
                        "401: resending with the re-read token"
                    );
                    header = token_header(call.token, &fresh)?;
                    token = fresh;
                }
                Next::Retry {
                    wait,
                    pacer_waits,
                    give_up,
                } => {
                    let in_time = Instant::now() + wait < deadline;
                    if sends >= self.inner.options.max_attempts || !in_time {
                        return Err(give_up);
                    }
                    tracing::warn!(
                        operation = call.operation,
                        attempt = sends,
                        "retrying in {wait:?}: {give_up}"
                    );
                    if !pacer_waits {
                        tokio::time::sleep(wait).await;
                    }
                    failures += 1;
                }
            }
        }
    }

    /// What to do about one attempt's outcome.
    fn classify(
        &self,
        call: &Call<'_>,
        turn: &mut Turn,
        outcome: Result<(StatusCode, HeaderMap, Result<Bytes, reqwest::Error>), reqwest::Error>,
        failures: u32,
    ) -> Next {
        let retry = |give_up| Next::Retry {
            wait: self.backoff(failures),
            pacer_waits: false,
            give_up,
        };
        let (status, headers, body) = match outcome {
            // No connection, so no request: safe to resend whatever it was.
            Err(error) if error.is_connect() => {
                return retry(CircleCiError::Transport {
                    message: error.to_string(),
                });
            }
            Err(error) => {
                let reason = if error.is_timeout() {
                    "no answer in time".to_owned()
                } else {
                    format!("the connection failed after the request was sent: {error}")
                };
                if call.effect == Effect::Once {
                    return Next::Done(Err(ambiguous(call, None, reason)));
                }
                return retry(if error.is_timeout() {
                    timeout(call, &reason)
                } else {
                    CircleCiError::Transport { message: reason }
                });
            }
            Ok(answered) => answered,
        };
        // Everything but a 429 used quota.
        let seen = RateLimitHeaders::parse(&headers, Utc::now());
        turn.answered(status != StatusCode::TOO_MANY_REQUESTS, seen.as_ref());
        tracing::debug!(
            operation = call.operation,
            status = status.as_u16(),
            "CircleCI answered"
        );
        let body = match body {
            Ok(body) => body,
            Err(error) if status.is_success() || status.is_server_error() => {
                let reason = format!("{status}, but the body could not be read: {error}");
                if call.effect == Effect::Once {
                    return Next::Done(Err(ambiguous(call, Some(status.as_u16()), reason)));
                }
                return retry(CircleCiError::Transport { message: reason });
            }
            // A rejection is a rejection, whether or not its message arrived.
            Err(_) => Bytes::new(),
        };
        if status.is_success() {
            return Next::Done(Ok(Reply { status, body }));
        }
        match status {
            StatusCode::UNAUTHORIZED => Next::Reread {
                give_up: status_error(call, status, &body),
            },
            StatusCode::TOO_MANY_REQUESTS => {
                // 429 means "not processed": even a create may be resent.
                let asked = retry_after(&headers, Utc::now());
                turn.throttled(asked);
                let give_up = CircleCiError::RateLimited { retry_after: asked };
                match asked {
                    // The pacer now holds the token's requests until then.
                    Some(asked) => Next::Retry {
                        wait: asked,
                        pacer_waits: true,
                        give_up,
                    },
                    None => retry(give_up),
                }
            }
            status if status.is_server_error() && call.effect == Effect::Once => {
                Next::Done(Err(ambiguous(
                    call,
                    Some(status.as_u16()),
                    format!(
                        "{status} after the request was sent: {}",
                        message_of(&body, status)
                    ),
                )))
            }
            status if status.is_server_error() => retry(status_error(call, status, &body)),
            _ => Next::Done(Err(status_error(call, status, &body))),
        }
    }

    async fn send_once(
        &self,
        call: &Call<'_>,
        url: &Url,
        token: &HeaderValue,
        attempt_timeout: Duration,
    ) -> Result<(StatusCode, HeaderMap, Result<Bytes, reqwest::Error>), reqwest::Error> {
        // reqwest's per-request timeout covers connecting, the answer and its whole body.
        let mut request = self
            .inner
            .http
            .request(call.method.clone(), url.clone())
            .header("Circle-Token", token.clone())
            .header(http::header::ACCEPT, "application/json")
            .timeout(attempt_timeout);
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        Ok((status, headers, response.bytes().await))
    }

    fn backoff(&self, failures: u32) -> Duration {
        let options = &self.inner.options;
        let ceiling = backoff_ceiling(failures, options.backoff_base, options.backoff_cap);
        full_jitter(ceiling, &mut rand::rng())
    }
}

/// The decision about one attempt.
enum Next {
    Done(Result<Reply, CircleCiError>),
    /// 401: re-read the token once, then resend if it changed.
    Reread {
        give_up: CircleCiError,
    },
    /// Send again after `wait`, unless attempts or the deadline run out (then `give_up`).
    Retry {
        wait: Duration,
        /// The pacer holds the token for `wait` (a 429's Retry-After): do not sleep twice.
        pacer_waits: bool,
        give_up: CircleCiError,
    },
}

fn token_header(name: &str, token: &SecretString) -> Result<HeaderValue, CircleCiError> {
    let mut value =
        HeaderValue::from_str(token.expose_secret()).map_err(|_| CircleCiError::Token {
            token: name.to_owned(),
            source: SecretsError::Malformed {
                kind: SecretKind::CircleCiTokens,
                reason: format!("token `{name}` has characters that cannot go in an HTTP header"),
            },
        })?;
    // Keeps it out of Debug output and out of HTTP/2 header compression tables.
    value.set_sensitive(true);
    Ok(value)
}

fn pacing_error(call: &Call<'_>, refused: PacingRefused) -> CircleCiError {
    if refused.throttled {
        CircleCiError::RateLimited {
            retry_after: Some(refused.wait).filter(|wait| !wait.is_zero()),
        }
    } else {
        timeout(
            call,
            &format!(
                "token `{}` is paced to its rate limit and its next turn comes after the deadline",
                call.token
            ),
        )
    }
}

fn timeout(call: &Call<'_>, reason: &str) -> CircleCiError {
    CircleCiError::Timeout {
        what: format!("{}: {reason}", call.operation),
    }
}

fn ambiguous(call: &Call<'_>, status: Option<u16>, reason: String) -> CircleCiError {
    tracing::warn!(
        operation = call.operation,
        status,
        "ambiguous outcome: {reason}"
    );
    CircleCiError::Ambiguous {
        operation: call.operation,
        status,
        reason,
    }
}

fn status_error(call: &Call<'_>, status: StatusCode, body: &[u8]) -> CircleCiError {
    let message = message_of(body, status);
    match status {
        StatusCode::UNAUTHORIZED => CircleCiError::Unauthorized {
            token: call.token.to_owned(),
            message,
        },
        StatusCode::FORBIDDEN => CircleCiError::Forbidden { message },
        StatusCode::NOT_FOUND => CircleCiError::NotFound { message },
        StatusCode::TOO_MANY_REQUESTS => CircleCiError::RateLimited { retry_after: None },
        status if status.is_client_error() => CircleCiError::BadRequest {
            status: status.as_u16(),
            message,
        },
        status if status.is_server_error() => CircleCiError::Server {
            status: status.as_u16(),
            message,
        },
        status => CircleCiError::UnexpectedResponse {
            status: status.as_u16(),
            message,
        },
    }
}

/// CircleCI's own words: `{"message": ..}` (most endpoints) or `{"error": ..}` (some).
fn message_of(body: &[u8], status: StatusCode) -> String {
    const LONGEST: usize = 500;
    #[derive(Deserialize)]
    struct ErrorBody {
        message: Option<String>,
        error: Option<String>,
    }
    let text = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody {
            message: Some(text),
            ..
        })
        | Ok(ErrorBody {
            error: Some(text), ..
        }) => text,
        _ => String::from_utf8_lossy(body).trim().to_owned(),
    };
    if text.is_empty() {
        return status.canonical_reason().unwrap_or("no message").to_owned();
    }
    if text.chars().count() > LONGEST {
        let head: String = text.chars().take(LONGEST).collect();
        format!("{head}…")
    } else {
        text
    }
}

/// A read's body: anything but the documented shape is an unexpected response.
fn decode<T: DeserializeOwned>(call: &Call<'_>, reply: &Reply) -> Result<T, CircleCiError> {
    serde_json::from_slice(&reply.body).map_err(|error| CircleCiError::UnexpectedResponse {
        status: reply.status.as_u16(),
        message: format!("{}: {error}", call.operation),
    })
}

/// A write's success body: if it cannot be read, the write happened but we do not know
/// what it produced, which is as good as not knowing whether it happened.
fn decode_effect<T: DeserializeOwned>(call: &Call<'_>, reply: &Reply) -> Result<T, CircleCiError> {
    serde_json::from_slice(&reply.body).map_err(|error| {
        ambiguous(
            call,
            Some(reply.status.as_u16()),
            format!(
                "{} succeeded but its answer could not be read: {error}",
                reply.status
            ),
        )
    })
}

#[derive(Deserialize)]
struct Page<T> {
    items: Vec<T>,
    #[serde(default)]
    next_page_token: Option<String>,
}

/// What a paged read produced.
struct Listed<T> {
    items: Vec<T>,
    /// False when the page limit cut the list short.
    complete: bool,
}

impl CircleCiClient {
    /// Reads pages until there are no more, `more` says stop, or `max_pages` were read.
    async fn pages<T, F>(
        &self,
        mut call: Call<'_>,
        max_pages: usize,
        mut more: F,
    ) -> Result<Listed<T>, CircleCiError>
    where
        T: DeserializeOwned + Send,
        F: FnMut(&[T]) -> bool + Send,
    {
        let mut items = Vec::new();
        let mut seen_tokens = Vec::new();
        for _ in 0..max_pages.max(1) {
            let reply = self.execute(&call).await?;
            let page: Page<T> = decode(&call, &reply)?;
            let keep_going = more(&page.items);
            items.extend(page.items);
            let next = page.next_page_token.filter(|token| !token.is_empty());
            let Some(next) = next.filter(|_| keep_going) else {
                return Ok(Listed {
                    items,
                    complete: true,
                });
            };
            if seen_tokens.contains(&next) {
                return Err(CircleCiError::UnexpectedResponse {
                    status: reply.status.as_u16(),
                    message: format!("{}: CircleCI repeated a page token", call.operation),
                });
            }
            call.query.retain(|(name, _)| *name != "page-token");
            call.query.push(("page-token", next.clone()));
            seen_tokens.push(next);
        }
        Ok(Listed {
            items,
            complete: false,
        })
    }

    /// A list that must be whole to be right (e.g. "every workflow finished").
    async fn all_pages<T>(&self, call: Call<'_>) -> Result<Vec<T>, CircleCiError>
    where
        T: DeserializeOwned + Send,
    {
        let operation = call.operation;
        let max_pages = self.inner.options.max_pages;
        let listed = self.pages(call, max_pages, |_: &[T]| true).await?;
        if !listed.complete {
            return Err(CircleCiError::UnexpectedResponse {
                status: 200,
                message: format!("{operation}: more than {max_pages} pages"),
            });
        }
        Ok(listed.items)
    }
}

fn get<'a>(operation: &'static str, token: &'a str, path: String) -> Call<'a> {
    Call {
        operation,
        method: Method::GET,
        path,
        query: Vec::new(),
        body: None,
        token,
        effect: Effect::Repeatable,
    }
}

fn post<'a>(
    operation: &'static str,
    token: &'a str,
    path: String,
    body: Option<Value>,
) -> Call<'a> {
    Call {
        operation,
        method: Method::POST,
        path,
        query: Vec::new(),
        body,
        token,
        effect: Effect::Once,
    }
}

#[async_trait]
impl CircleCi for CircleCiClient {
    async fn trigger_pipeline(
        &self,
        token: &str,
        request: &PipelineRequest,
    ) -> Result<CreatedPipeline, CircleCiError> {
        request.validate()?;
        let call = post(
            "trigger pipeline",
            token,
            request.path()?,
            Some(request.body()),
        );
        let reply = self.execute(&call).await?;
        if reply.status == StatusCode::OK {
            // pipeline/run's "accepted, but nothing to run" (CI skip and the like).
            return Err(CircleCiError::NotTriggered {
                message: message_of(&reply.body, reply.status),
            });
        }
        decode_effect(&call, &reply)
    }

    async fn get_pipeline(
        &self,
        token: &str,
        pipeline_id: Uuid,
    ) -> Result<Pipeline, CircleCiError> {
        let call = get("get pipeline", token, format!("/pipeline/{pipeline_id}"));
        decode(&call, &self.execute(&call).await?)
    }

    async fn list_pipeline_workflows(
        &self,
        token: &str,
        pipeline_id: Uuid,
    ) -> Result<Vec<Workflow>, CircleCiError> {
        self.all_pages(get(
            "list pipeline workflows",
            token,
            format!("/pipeline/{pipeline_id}/workflow"),
        ))
        .await
    }

    async fn get_workflow(
        &self,
        token: &str,
        workflow_id: Uuid,
    ) -> Result<Workflow, CircleCiError> {
        let call = get("get workflow", token, format!("/workflow/{workflow_id}"));
        decode(&call, &self.execute(&call).await?)
    }

    async fn list_workflow_jobs(
        &self,
        token: &str,
        workflow_id: Uuid,
    ) -> Result<Vec<Job>, CircleCiError> {
        self.all_pages(get(
            "list workflow jobs",
            token,
            format!("/workflow/{workflow_id}/job"),
        ))
        .await
    }

    async fn rerun_workflow(
        &self,
        token: &str,
        workflow_id: Uuid,
        rerun: &Rerun,
    ) -> Result<Uuid, CircleCiError> {
        #[derive(Deserialize)]
        struct Rerunning {
            workflow_id: Uuid,
        }
        let body = rerun_body(rerun)?;
        let call = post(
            "rerun workflow",
            token,
            format!("/workflow/{workflow_id}/rerun"),
            Some(body),
        );
        let reply = self.execute(&call).await?;
        let rerunning: Rerunning = decode_effect(&call, &reply)?;
        Ok(rerunning.workflow_id)
    }

    async fn approve_job(
        &self,
        token: &str,
        workflow_id: Uuid,
        approval_request_id: Uuid,
    ) -> Result<(), CircleCiError> {
        let call = post(
            "approve job",
            token,
            format!("/workflow/{workflow_id}/approve/{approval_request_id}"),
            None,
        );
        self.execute(&call).await.map(drop)
    }

    async fn cancel_workflow(&self, token: &str, workflow_id: Uuid) -> Result<(), CircleCiError> {
        let call = post(
            "cancel workflow",
            token,
            format!("/workflow/{workflow_id}/cancel"),
            None,
        );
        self.execute(&call).await.map(drop)
    }

    async fn get_project(
        &self,
        token: &str,
        project: &ProjectSlug,
    ) -> Result<Project, CircleCiError> {
        let call = get(
            "get project",
            token,
            format!("/project/{}", project_path(project)?),
        );
        decode(&call, &self.execute(&call).await?)
    }

    async fn list_project_pipelines(
        &self,
        token: &str,
        project: &ProjectSlug,
        query: &PipelineQuery,
    ) -> Result<Vec<Pipeline>, CircleCiError> {
        let mut call = get(
            "list project pipelines",
            token,
            format!("/project/{}/pipeline", project_path(project)?),
        );
        if let Some(branch) = &query.branch {
            check_git_ref(branch).map_err(|reason| {
                CircleCiError::invalid(format!(
                    "`{}` is not a branch name: {reason}",
                    branch.escape_debug()
                ))
            })?;
            call.query.push(("branch", branch.clone()));
        }
        let since = query.created_since;
        let max_pages = query.max_pages.unwrap_or(self.inner.options.max_pages);
        // Newest first: once a page reaches past `since`, older pages cannot match.
        let listed = self
            .pages(call, max_pages, |page: &[Pipeline]| {
                since.is_none_or(|since| page.iter().all(|pipeline| pipeline.created_at >= since))
            })
            .await?;
        let mut pipelines = listed.items;
        if let Some(since) = since {
            pipelines.retain(|pipeline| pipeline.created_at >= since);
        }
        Ok(pipelines)
    }

    async fn me(&self, token: &str) -> Result<User, CircleCiError> {
        let call = get("get current user", token, "/me".to_owned());
        decode(&call, &self.execute(&call).await?)
    }

    async fn create_webhook(
        &self,
        token: &str,
        webhook: &NewWebhook,
    ) -> Result<Webhook, CircleCiError> {
        webhook.validate()?;
        let call = post(
            "create webhook",
            token,
            "/webhook".to_owned(),
            Some(webhook.body()),
        );
        let reply = self.execute(&call).await?;
        decode_effect(&call, &reply)
    }

    async fn list_webhooks(
        &self,
        token: &str,
        project_id: Uuid,
    ) -> Result<Vec<Webhook>, CircleCiError> {
        let mut call = get("list webhooks", token, "/webhook".to_owned());
        call.query.push(("scope-id", project_id.to_string()));
        call.query.push(("scope-type", "project".to_owned()));
        self.all_pages(call).await
    }

    async fn update_webhook(
        &self,
        token: &str,
        webhook_id: Uuid,
        update: &WebhookUpdate,
    ) -> Result<Webhook, CircleCiError> {
        update.validate()?;
        let body = update.body();
        if body.as_object().is_some_and(|fields| fields.is_empty()) {
            return Err(CircleCiError::invalid(
                "a webhook update must change something",
            ));
        }
        let call = Call {
            operation: "update webhook",
            method: Method::PUT,
            path: format!("/webhook/{webhook_id}"),
            query: Vec::new(),
            body: Some(body),
            token,
            // Setting the same fields to the same values twice is the same as once.
            effect: Effect::Repeatable,
        };
        decode(&call, &self.execute(&call).await?)
    }
}

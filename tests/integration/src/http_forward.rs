//! One HTTP request forwarded to an upstream server and its answer relayed: what the
//! loopback proxies in front of moto_server share (the serializing proxy of the store
//! suite, the capacity meter, the bench's partition router).

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;

/// Sends `method` `url` with `headers` (less `Host` and `Content-Length`, which the client
/// sets for the new connection) and `body`.
pub async fn send(
    client: &reqwest::Client,
    method: Method,
    url: String,
    headers: &HeaderMap,
    body: Bytes,
) -> reqwest::Result<reqwest::Response> {
    let mut outgoing = client.request(method, url).body(body);
    for (name, value) in headers {
        if name != header::HOST && name != header::CONTENT_LENGTH {
            outgoing = outgoing.header(name, value);
        }
    }
    outgoing.send().await
}

/// An upstream's answer as a response (its headers less the framing ones, which the server
/// sets for the body it sends).
pub fn relay(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Response {
    let mut response = Response::builder().status(status);
    for (name, value) in headers {
        if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
            response = response.header(name, value);
        }
    }
    response.body(Body::from(body)).unwrap_or_else(bad_gateway)
}

/// The upstream could not be reached (or answered something unusable).
pub fn bad_gateway(error: impl std::fmt::Display) -> Response {
    let mut response = Response::new(Body::from(error.to_string()));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

/// [`send`], then [`relay`] the whole answer.
pub async fn forward(
    client: &reqwest::Client,
    method: Method,
    url: String,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    match send(client, method, url, headers, body).await {
        Ok(answer) => {
            let (status, headers) = (answer.status(), answer.headers().clone());
            let body = answer.bytes().await.unwrap_or_default();
            relay(status, &headers, body)
        }
        Err(error) => bad_gateway(error),
    }
}

//! A minimal HTTP/1.0 client for JSON endpoints (Switchyard's API, Janus's REST API,
//! Prometheus's query API) and plain text (/metrics), so the load tester and the tests
//! need no HTTP client crate. Plain http only.

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Fetches `http://host:port/path` and parses the body as JSON (200 only).
pub async fn get_json(url: &str) -> Result<Value, String> {
    match get(url).await? {
        (200, body) => Ok(body),
        (status, body) => Err(format!("{url}: HTTP {status}: {body}")),
    }
}

/// Fetches `http://host:port/path`: the status code and the body parsed as JSON.
pub async fn get(url: &str) -> Result<(u16, Value), String> {
    request(url, "GET", None).await
}

/// Any method, an optional JSON body and an optional `Authorization` header value: the
/// status code and the body parsed as JSON (`null` when empty).
pub async fn call(
    url: &str,
    method: &str,
    body: Option<&Value>,
    authorization: Option<&str>,
) -> Result<(u16, Value), String> {
    let (status, text) =
        request_full(url, method, body.map(Value::to_string), authorization).await?;
    if text.trim().is_empty() {
        return Ok((status, Value::Null));
    }
    let body = serde_json::from_str(&text).map_err(|e| format!("{url}: bad JSON: {e}: {text}"))?;
    Ok((status, body))
}

/// Fetches `http://host:port/path`: the status code and the body as text.
pub async fn get_text(url: &str) -> Result<(u16, String), String> {
    request_raw(url, "GET", None).await
}

/// Posts a JSON body; the status code and the body parsed as JSON.
pub async fn post_json(url: &str, body: &Value) -> Result<(u16, Value), String> {
    request(url, "POST", Some(body.to_string())).await
}

async fn request(url: &str, method: &str, body: Option<String>) -> Result<(u16, Value), String> {
    let (status, body) = request_raw(url, method, body).await?;
    let body = serde_json::from_str(&body).map_err(|e| format!("{url}: bad JSON: {e}"))?;
    Ok((status, body))
}

async fn request_raw(
    url: &str,
    method: &str,
    body: Option<String>,
) -> Result<(u16, String), String> {
    request_full(url, method, body, None).await
}

// HTTP/1.0, so no server answers with a chunked body.
pub async fn request_full(
    url: &str,
    method: &str,
    body: Option<String>,
    authorization: Option<&str>,
) -> Result<(u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("not an http:// URL: {url}"))?;
    let (host, path) = match rest.split_once('/') {
        Some((h, p)) => (h, format!("/{p}")),
        None => (rest, "/".to_string()),
    };
    let io = |e: std::io::Error| format!("{url}: {e}");
    let mut stream = TcpStream::connect(host).await.map_err(io)?;
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let request = match &body {
        Some(b) => format!(
            "{method} {path} HTTP/1.0\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        ),
        None => format!("{method} {path} HTTP/1.0\r\nHost: {host}\r\n{auth}\r\n"),
    };
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.map_err(io)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{url}: no HTTP body"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{url}: no HTTP status"))?;
    Ok((status, body.to_string()))
}

//! One webhook POST: parse the receiver's URL, connect (over TLS for https, with
//! rustls through tokio-rustls), send the body as HTTP/1.0 and read the status line.
//! HTTP/1.0 with a Content-Length and no keep-alive is all a webhook needs, so there is
//! no HTTP client crate here; TLS, the part that must not be home-made, is rustls.
//!
//! Plain http is accepted only for loopback receivers: over a network the body and its
//! signature would travel in the clear.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// Where a webhook goes.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    pub tls: bool,
    /// The host as written (a name, an IPv4 address or a bracketed IPv6 one).
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Target {
    /// `https://host[:port][/path]`, or `http://host[:port][/path]` where host is a
    /// loopback address or `localhost`.
    pub fn parse(url: &str) -> Option<Target> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else {
            (false, url.strip_prefix("http://")?)
        };
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, format!("/{p}")),
            None => (rest, "/".to_string()),
        };
        if path.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return None;
        }
        let default_port = if tls { 443 } else { 80 };
        // "[::1]:8443", "[::1]", "host:8443", "host"
        let (host, port) = if authority.starts_with('[') {
            let end = authority.find(']')?;
            let port = match &authority[end + 1..] {
                "" => default_port,
                p => p.strip_prefix(':')?.parse().ok()?,
            };
            (&authority[..=end], port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, p.parse().ok()?),
                None => (authority, default_port),
            }
        };
        let valid_host = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c));
        if !valid_host || port == 0 {
            return None;
        }
        let target = Target {
            tls,
            host: host.to_string(),
            port,
            path,
        };
        (tls || target.is_loopback()).then_some(target)
    }

    fn bare_host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }

    fn is_loopback(&self) -> bool {
        let host = self.bare_host();
        host.eq_ignore_ascii_case("localhost")
            || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

/// The TLS client every https POST uses: the public web roots, plus the operator's own
/// anchors when given (a private CA; the tests' CA).
pub fn tls_connector(extra_ca_file: Option<&Path>) -> std::io::Result<TlsConnector> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca_file {
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        for cert in certs {
            let cert = cert.map_err(|e| invalid(format!("{}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        }
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// POSTs `body` with `headers` (each line ending in CRLF) to `target`; the status code.
pub async fn post(
    target: &Target,
    headers: &str,
    body: &str,
    tls: &TlsConnector,
) -> std::io::Result<u16> {
    let stream = TcpStream::connect((target.bare_host(), target.port)).await?;
    let _ = stream.set_nodelay(true);
    let host_header = match (target.tls, target.port) {
        (true, 443) | (false, 80) => target.host.clone(),
        _ => format!("{}:{}", target.host, target.port),
    };
    let request = format!(
        "POST {} HTTP/1.0\r\nHost: {host_header}\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        target.path,
        body.len()
    );
    if target.tls {
        let name = ServerName::try_from(target.bare_host().to_string())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let stream = tls.connect(name, stream).await?;
        exchange(stream, request.as_bytes()).await
    } else {
        exchange(stream, request.as_bytes()).await
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
) -> std::io::Result<u16> {
    stream.write_all(request).await?;
    stream.flush().await?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    // The status line is all we need.
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no HTTP status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_http_only_to_loopback() {
        let t = Target::parse("https://hooks.example.org/in").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.path.as_str()),
            (true, "hooks.example.org", 443, "/in")
        );
        let t = Target::parse("https://hooks.example.org:8443").unwrap();
        assert_eq!((t.port, t.path.as_str()), (8443, "/"));
        let t = Target::parse("http://127.0.0.1:9000/hooks").unwrap();
        assert_eq!((t.tls, t.port), (false, 9000));
        let t = Target::parse("http://[::1]:9000/h").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("[::1]", 9000));
        assert!(Target::parse("http://localhost/h").is_some());
        assert!(Target::parse("https://[::1]/h").is_some());
        for bad in [
            "http://hooks.example.org:9000/", // clear text off the machine
            "http://10.0.0.1:80/",
            "ftp://x:1",
            "https://:443/",
            "https://x:0/",
            "https://x:99999/",
            "https://x:1/a b",
            "https://x:1/a\r\nHost: y",
            "https://x y/",
            "https://[::1/",
        ] {
            assert_eq!(Target::parse(bad), None, "{bad}");
        }
    }
}

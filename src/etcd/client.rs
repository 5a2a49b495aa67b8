//! A small blocking HTTP client for etcd's plain HTTP endpoints and its grpc-gateway JSON API.
//! Plain `http://` and `https://` with an optional CA and client certificate (kubeadm's etcd
//! requires client certificates on its client port).

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};
use ureq::unversioned::resolver::{self, DefaultResolver, ResolvedSocketAddrs};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

/// The path prefix of etcd `version`'s JSON gateway: `/v3` from 3.4, `/v3beta` in 3.3,
/// `/v3alpha` before (3.3 still has `/v3alpha`; 3.4 has all three, 3.5 dropped the old ones).
pub fn gateway_prefix(major: u64, minor: u64) -> &'static str {
    match (major, minor) {
        (3, m) if m <= 2 => "/v3alpha",
        (3, 3) => "/v3beta",
        _ => "/v3",
    }
}

/// Largest body we accept from etcd unless a caller says otherwise.
pub const DEFAULT_BODY_LIMIT: u64 = 64 * 1024 * 1024;

/// Idle connections kept per etcd endpoint: the monitor's worker count, with room to spare.
const IDLE_CONNECTIONS: usize = 16;

/// Files for TLS towards etcd. All optional: with none, `https://` uses the bundled web roots.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A TLS file the OS would not read.
    #[error("{}: {source}", path.display())]
    TlsRead {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A TLS file that holds no usable PEM item.
    #[error("{}: {reason}", path.display())]
    TlsFile { path: PathBuf, reason: String },
    /// `--cert` without `--key` or the other way round.
    #[error("--cert and --key must be given together")]
    TlsPairing,
    /// The request failed before a response arrived (refused, timeout, TLS handshake).
    #[error("GET/POST {url} failed: {reason}")]
    Transport { url: String, reason: String },
    /// A response arrived with a non-2xx status.
    #[error("{url} answered HTTP {status}: {}", body.trim())]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    /// The body was larger than the limit.
    #[error("{url}: response body larger than {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    /// The body was not what we expected (not UTF-8, not JSON, missing field).
    #[error("{url}: {reason}")]
    Body { url: String, reason: String },
}

/// A text body with the Content-Type it came with.
#[derive(Debug)]
pub struct TextResponse {
    pub body: String,
    pub content_type: Option<String>,
}

/// A reusable client (connection pool inside). Cheap to clone, safe to share across threads.
#[derive(Clone)]
pub struct HttpClient {
    agent: ureq::Agent,
}

impl HttpClient {
    /// A client for plain HTTP and for HTTPS with the given files.
    pub fn new(tls: &TlsFiles) -> Result<Self, ClientError> {
        let mut tls_config = TlsConfig::builder();
        if let Some(ca) = &tls.ca {
            let certs = read_certs(ca)?;
            tls_config = tls_config.root_certs(RootCerts::new_with_certs(&certs));
        }
        match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => {
                let certs = read_certs(cert)?;
                let key = read_key(key)?;
                tls_config = tls_config.client_cert(Some(ClientCert::new_with_certs(&certs, key)));
            }
            (None, None) => {}
            _ => return Err(ClientError::TlsPairing),
        }
        let config = ureq::Agent::config_builder()
            .tls_config(tls_config.build())
            .http_status_as_error(false)
            .user_agent("etcd-image-tools")
            // ureq keeps 3 idle connections per host; the monitor's workers scrape etcd
            // concurrently, and each connection dropped and reopened costs etcd more CPU
            // than the scrape's own work on our side.
            .max_idle_connections_per_host(IDLE_CONNECTIONS)
            .max_idle_connections(IDLE_CONNECTIONS)
            // ureq's 128 KiB per buffer and connection was most of the monitor's memory with
            // a few pooled connections; etcd's answers stream through smaller ones as fast.
            .input_buffer_size(32 << 10)
            .output_buffer_size(16 << 10)
            .build();
        Ok(HttpClient {
            agent: ureq::Agent::with_parts(
                config,
                DefaultConnector::default(),
                Resolver::default(),
            ),
        })
    }

    /// A plain-HTTP client with no TLS files.
    pub fn plain() -> Self {
        // TlsFiles::default() reads no file, so this cannot fail.
        match Self::new(&TlsFiles::default()) {
            Ok(c) => c,
            Err(e) => unreachable!("no TLS files given, yet: {e}"),
        }
    }

    /// GET `url` and return the body as text, within `timeout`, refusing bodies over `limit`.
    pub fn get_text(
        &self,
        url: &str,
        timeout: Duration,
        limit: u64,
    ) -> Result<String, ClientError> {
        let response = self.get(url, None, timeout)?;
        read_body(url, response, limit)
    }

    /// GET `url` with an `Accept` header; returns the body and the response's Content-Type.
    /// (The monitor asks etcd for text 0.0.4 and checks it got text.) The body is read into
    /// `buffer`, which the caller may have kept from an earlier call (etcd's /metrics is
    /// chunked, with no length to size one by).
    pub fn get_text_accept(
        &self,
        url: &str,
        accept: &str,
        timeout: Duration,
        limit: u64,
        buffer: Vec<u8>,
    ) -> Result<TextResponse, ClientError> {
        let response = self.get(url, Some(accept), timeout)?;
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = read_body_into(url, response, limit, buffer)?;
        Ok(TextResponse { body, content_type })
    }

    fn get(
        &self,
        url: &str,
        accept: Option<&str>,
        timeout: Duration,
    ) -> Result<ureq::http::Response<ureq::Body>, ClientError> {
        let mut request = self
            .agent
            .get(url)
            .config()
            .timeout_global(Some(timeout))
            .build();
        if let Some(accept) = accept {
            request = request.header("Accept", accept);
        }
        request.call().map_err(|e| transport(url, e))
    }

    /// POST a JSON body to `url` (etcd's grpc-gateway) and decode the JSON answer.
    pub fn post_json(
        &self,
        url: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<serde_json::Value, ClientError> {
        let response = self
            .agent
            .post(url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes())
            .map_err(|e| transport(url, e))?;
        let text = read_body(url, response, DEFAULT_BODY_LIMIT)?;
        serde_json::from_str(&text).map_err(|e| ClientError::Body {
            url: url.to_string(),
            reason: format!("invalid JSON: {e}"),
        })
    }
}

/// Resolves IP addresses on the spot and remembers a host name's addresses for
/// [`NAME_TTL`]. ureq's own resolver starts a thread for every request that has a timeout
/// (all of ours), also for `127.0.0.1` and also when a pooled connection is then used: a
/// thread started and ended per scrape. (ureq's resolver API is "unversioned": Cargo.lock
/// pins the version it was written against.)
#[derive(Debug, Default)]
struct Resolver {
    fallback: DefaultResolver,
    last_name: Mutex<Option<(String, ResolvedSocketAddrs, Instant)>>,
}

/// How long a resolved host name is used before it is resolved again.
const NAME_TTL: Duration = Duration::from_secs(10);

impl resolver::Resolver for Resolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let port = uri.port_u16().or(match uri.scheme_str() {
            Some("http") => Some(80),
            Some("https") => Some(443),
            _ => None,
        });
        let (Some(host), Some(port)) = (uri.host(), port) else {
            return self.fallback.resolve(uri, config, timeout);
        };
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>() {
            let mut addrs = self.empty();
            addrs.push(SocketAddr::new(ip, port));
            return Ok(addrs);
        }
        let key = format!("{host}:{port}");
        let mut last = self.last_name.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((name, addrs, at)) = &*last {
            if *name == key && at.elapsed() < NAME_TTL {
                return Ok(addrs.clone());
            }
        }
        drop(last);
        let addrs = self.fallback.resolve(uri, config, timeout)?;
        last = self.last_name.lock().unwrap_or_else(|e| e.into_inner());
        *last = Some((key, addrs.clone(), Instant::now()));
        Ok(addrs)
    }
}

fn transport(url: &str, e: ureq::Error) -> ClientError {
    ClientError::Transport {
        url: url.to_string(),
        reason: e.to_string(),
    }
}

fn read_body(
    url: &str,
    response: ureq::http::Response<ureq::Body>,
    limit: u64,
) -> Result<String, ClientError> {
    read_body_into(url, response, limit, Vec::new())
}

fn read_body_into(
    url: &str,
    response: ureq::http::Response<ureq::Body>,
    limit: u64,
    mut bytes: Vec<u8>,
) -> Result<String, ClientError> {
    let status = response.status().as_u16();
    bytes.clear();
    response
        .into_body()
        .into_reader()
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ClientError::Transport {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
    if bytes.len() as u64 > limit {
        return Err(ClientError::TooLarge {
            url: url.to_string(),
            limit,
        });
    }
    let text = String::from_utf8(bytes).map_err(|e| ClientError::Body {
        url: url.to_string(),
        reason: format!("body is not UTF-8 (byte {})", e.utf8_error().valid_up_to()),
    })?;
    if !(200..300).contains(&status) {
        let mut body = text;
        body.truncate(200);
        return Err(ClientError::Status {
            url: url.to_string(),
            status,
            body,
        });
    }
    Ok(text)
}

fn read_pem(path: &Path) -> Result<Vec<PemItem<'static>>, ClientError> {
    let tls_err = |reason: String| ClientError::TlsFile {
        path: path.to_path_buf(),
        reason,
    };
    let data = std::fs::read(path).map_err(|source| ClientError::TlsRead {
        path: path.to_path_buf(),
        source,
    })?;
    let items: Result<Vec<_>, _> = ureq::tls::parse_pem(&data).collect();
    items.map_err(|e| tls_err(format!("invalid PEM: {e}")))
}

fn read_certs(path: &Path) -> Result<Vec<Certificate<'static>>, ClientError> {
    let certs: Vec<_> = read_pem(path)?
        .into_iter()
        .filter_map(|item| match item {
            PemItem::Certificate(c) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(ClientError::TlsFile {
            path: path.to_path_buf(),
            reason: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKey<'static>, ClientError> {
    read_pem(path)?
        .into_iter()
        .find_map(|item| match item {
            PemItem::PrivateKey(k) => Some(k),
            _ => None,
        })
        .ok_or_else(|| ClientError::TlsFile {
            path: path.to_path_buf(),
            reason: "no PRIVATE KEY block found".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ureq::unversioned::resolver::Resolver as _;

    fn resolve(resolver: &Resolver, url: &str) -> Vec<SocketAddr> {
        let uri: ureq::http::Uri = url.parse().unwrap();
        let config = ureq::config::Config::default();
        let timeout = NextTimeout {
            after: Duration::from_secs(5).into(),
            reason: ureq::Timeout::Resolve,
            per_read: None,
            per_write: None,
        };
        resolver.resolve(&uri, &config, timeout).unwrap().to_vec()
    }

    #[test]
    fn errors_name_the_url_or_file() {
        let url = "http://127.0.0.1:2379/metrics".to_string();
        let cases = [
            (
                ClientError::TlsFile {
                    path: "/etc/ca.pem".into(),
                    reason: "no CERTIFICATE block found".into(),
                },
                "/etc/ca.pem: no CERTIFICATE block found",
            ),
            (
                ClientError::TlsRead {
                    path: "/etc/ca.pem".into(),
                    source: std::io::Error::from_raw_os_error(libc::ENOENT),
                },
                "/etc/ca.pem: No such file or directory (os error 2)",
            ),
            (
                ClientError::TlsPairing,
                "--cert and --key must be given together",
            ),
            (
                ClientError::Transport {
                    url: url.clone(),
                    reason: "connection refused".into(),
                },
                "GET/POST http://127.0.0.1:2379/metrics failed: connection refused",
            ),
            (
                ClientError::Status {
                    url: url.clone(),
                    status: 503,
                    body: "  not ready\n".into(),
                },
                "http://127.0.0.1:2379/metrics answered HTTP 503: not ready",
            ),
            (
                ClientError::TooLarge {
                    url: url.clone(),
                    limit: 10,
                },
                "http://127.0.0.1:2379/metrics: response body larger than 10 bytes",
            ),
            (
                ClientError::Body {
                    url,
                    reason: "body is not UTF-8 (byte 3)".into(),
                },
                "http://127.0.0.1:2379/metrics: body is not UTF-8 (byte 3)",
            ),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text);
        }
    }

    #[test]
    fn ip_addresses_need_no_lookup_and_names_are_remembered() {
        let resolver = Resolver::default();
        assert_eq!(
            resolve(&resolver, "http://127.0.0.1:2379/metrics"),
            ["127.0.0.1:2379".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            resolve(&resolver, "https://[::1]/version"),
            ["[::1]:443".parse::<SocketAddr>().unwrap()]
        );
        assert!(resolver.last_name.lock().unwrap().is_none());
        let local = resolve(&resolver, "http://localhost:2379/metrics");
        assert!(
            !local.is_empty()
                && local
                    .iter()
                    .all(|a| a.ip().is_loopback() && a.port() == 2379)
        );
        let remembered = resolver.last_name.lock().unwrap().clone().unwrap();
        assert_eq!(remembered.0, "localhost:2379");
        assert_eq!(resolve(&resolver, "http://localhost:2379/version"), local);
    }
}

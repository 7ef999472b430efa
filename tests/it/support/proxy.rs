//! A fault-injecting HTTP proxy on loopback in front of the test S3 server: requests go through
//! to the real server, and the answers are changed the way a misbehaving S3-compatible server
//! or network would change them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, Response, StatusCode};

/// What the proxy does to each answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Passes requests and answers through unchanged.
    None,
    /// Answers as the server does, without its `ETag` header.
    StripEtag,
    /// Holds every request without an answer (a stopped server or a black-holed network).
    Stall,
    /// Answers `503 SlowDown` without asking the server, as S3 does under load.
    Unavailable,
    /// Closes the connection in the middle of the answer.
    Reset,
    /// Drops `If-None-Match` and `If-Match` from requests, as a server that ignores them
    /// behaves.
    IgnoreConditions,
}

/// Changes a running proxy's fault; requests already stalled go on when it changes.
#[derive(Clone)]
pub struct Control {
    fault: Arc<Mutex<Fault>>,
    changed: Arc<tokio::sync::Notify>,
    /// Requests that reached the proxy, answered or not.
    pub requests: Arc<AtomicUsize>,
}

impl Control {
    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
        self.changed.notify_waiters();
    }

    fn get(&self) -> Fault {
        *self.fault.lock().unwrap()
    }
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    control: Control,
    client: reqwest::Client,
}

/// Starts a proxy to `upstream` (an `http://host:port` address); returns its own address.
pub async fn start(upstream: String, fault: Fault) -> String {
    start_controlled(upstream, fault).await.0
}

/// Starts a proxy whose fault can be changed while it runs.
pub async fn start_controlled(upstream: String, fault: Fault) -> (String, Control) {
    let control = Control {
        fault: Arc::new(Mutex::new(fault)),
        changed: Arc::new(tokio::sync::Notify::new()),
        requests: Arc::new(AtomicUsize::new(0)),
    };
    let proxy = Proxy {
        upstream,
        control: control.clone(),
        client: reqwest::Client::new(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr: SocketAddr = listener.local_addr().expect("bound");
    let app = axum::Router::new().fallback(forward).with_state(proxy);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), control)
}

/// Starts a proxy on its own thread and runtime, so that it outlives a test's runtime and can
/// serve processes the test starts.
pub fn start_in_background(upstream: String, fault: Fault) -> (String, Control) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the proxy");
        rt.block_on(async move {
            let _ = tx.send(start_controlled(upstream, fault).await);
            std::future::pending::<()>().await
        });
    });
    rx.recv().expect("the proxy started")
}

async fn forward(State(proxy): State<Proxy>, request: Request) -> Response<Body> {
    proxy.control.requests.fetch_add(1, Ordering::SeqCst);
    loop {
        // Registered before the fault is read, so that a change in between is not missed.
        let changed = proxy.control.changed.notified();
        match proxy.control.get() {
            Fault::Stall => changed.await,
            Fault::Unavailable => {
                return Response::builder()
                    .status(StatusCode::SERVICE_UNAVAILABLE)
                    .header("content-type", "application/xml")
                    .body(Body::from(
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
                    ))
                    .unwrap_or_else(|_| status(StatusCode::SERVICE_UNAVAILABLE));
            }
            Fault::Reset => {
                // A body that fails after its headers: the server closes the connection.
                let broken = futures::stream::iter([
                    Ok(bytes::Bytes::from_static(b"<?xml")),
                    Err(std::io::Error::other("connection reset by the proxy")),
                ]);
                return Response::builder()
                    .status(StatusCode::OK)
                    .header("content-length", "100000")
                    .body(Body::from_stream(broken))
                    .unwrap_or_else(|_| status(StatusCode::BAD_GATEWAY));
            }
            Fault::None | Fault::StripEtag | Fault::IgnoreConditions => break,
        }
    }
    let fault = proxy.control.get();
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return status(StatusCode::BAD_REQUEST);
    };
    let mut upstream = proxy
        .client
        .request(parts.method, format!("{}{path}", proxy.upstream))
        .body(body);
    for (name, value) in &parts.headers {
        let condition = name == "if-none-match" || name == "if-match";
        if name != "host"
            && name != "content-length"
            && !(condition && fault == Fault::IgnoreConditions)
        {
            upstream = upstream.header(name, value);
        }
    }
    let Ok(answer) = upstream.send().await else {
        return status(StatusCode::BAD_GATEWAY);
    };
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        let dropped = fault == Fault::StripEtag && name == HeaderName::from_static("etag");
        if !dropped && name != "content-length" && name != "transfer-encoding" {
            response = response.header(name, value);
        }
    }
    let body = answer.bytes().await.unwrap_or_default();
    // The listing carries ETags in its XML body too.
    let body = if fault == Fault::StripEtag {
        strip_xml_etags(&body)
    } else {
        body.to_vec()
    };
    response
        .body(Body::from(body))
        .unwrap_or_else(|_| status(StatusCode::BAD_GATEWAY))
}

fn strip_xml_etags(body: &[u8]) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(body) else {
        return body.to_vec();
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<ETag>") {
        out.push_str(&rest[..start]);
        match rest[start..].find("</ETag>") {
            Some(end) => rest = &rest[start + end + "</ETag>".len()..],
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    out.push_str(rest);
    out.into_bytes()
}

fn status(code: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = code;
    response
}

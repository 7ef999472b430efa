//! A fault-injecting HTTP proxy on loopback in front of the test S3 server: requests go through
//! to the real server, and the answers are changed the way a misbehaving S3-compatible server
//! or network would change them.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, Response, StatusCode};

/// What the proxy does to each answer.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Answers as the server does, without its `ETag` header.
    StripEtag,
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    fault: Fault,
    client: reqwest::Client,
}

/// Starts a proxy to `upstream` (an `http://host:port` address); returns its own address.
pub async fn start(upstream: String, fault: Fault) -> String {
    let proxy = Proxy {
        upstream,
        fault,
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
    format!("http://{addr}")
}

async fn forward(State(proxy): State<Proxy>, request: Request) -> Response<Body> {
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
        if name != "host" && name != "content-length" {
            upstream = upstream.header(name, value);
        }
    }
    let Ok(answer) = upstream.send().await else {
        return status(StatusCode::BAD_GATEWAY);
    };
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        let dropped = match proxy.fault {
            Fault::StripEtag => name == HeaderName::from_static("etag"),
        };
        if !dropped && name != "content-length" && name != "transfer-encoding" {
            response = response.header(name, value);
        }
    }
    let body = answer.bytes().await.unwrap_or_default();
    // The listing carries ETags in its XML body too.
    let body = match proxy.fault {
        Fault::StripEtag => strip_xml_etags(&body),
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

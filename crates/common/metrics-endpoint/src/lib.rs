//! The Prometheus endpoint every Lightkeeper daemon shares.
//!
//! Code records through the [`metrics`] facade (`metrics::counter!` and
//! friends), so libraries such as the stores can count what they do without
//! knowing whether anything listens; with no endpoint installed those calls
//! cost an atomic load. A daemon started with `--metrics-listen` calls
//! [`serve`] once: it installs the process-wide Prometheus recorder and
//! answers `GET /metrics` in the text exposition format on its own
//! listener, apart from the service port, so scraping needs no credentials
//! of the service and can stay on loopback.
//!
//! Histograms get fixed buckets (below) rather than summaries: Prometheus can
//! aggregate buckets across instances and compute any quantile later.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets of every `*_seconds` histogram: 100 µs to 30 s.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Buckets of every `*_size` histogram (counts such as puts per commit).
pub const SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// HTTP requests answered by a daemon's API, by route pattern, method and
/// status ([`http_layer`]).
pub const HTTP_REQUESTS: &str = "http_requests_total";
/// Their latency, by route pattern.
pub const HTTP_SECONDS: &str = "http_request_duration_seconds";

/// How often histograms are drained into their buckets when nobody scrapes.
const UPKEEP: Duration = Duration::from_secs(5);

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address could not be bound.
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A recorder was already installed in this process, or the buckets
    /// were refused.
    #[error("cannot install the metrics recorder: {0}")]
    Recorder(String),
}

/// A running endpoint; dropping it stops serving (the recorder stays).
#[derive(Debug)]
pub struct Endpoint {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Endpoint {
    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Installs the Prometheus recorder for this process and serves
/// `GET /metrics` on `listen`. Logs the address it serves on.
pub async fn serve(listen: SocketAddr) -> Result<Endpoint, Error> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind {
        addr: listen,
        source,
    })?;
    let handle = install()?;
    let task = tokio::spawn(run(listener, handle));
    tracing::info!("metrics on http://{addr}/metrics");
    Ok(Endpoint { addr, task })
}

/// [`serve`] when `--metrics-listen` was given, nothing otherwise.
pub async fn serve_if(listen: Option<SocketAddr>) -> Result<Option<Endpoint>, Error> {
    match listen {
        Some(addr) => serve(addr).await.map(Some),
        None => Ok(None),
    }
}

fn install() -> Result<PrometheusHandle, Error> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_size".into()), SIZE_BUCKETS))
        .and_then(|b| b.install_recorder())
        .map_err(|e| Error::Recorder(e.to_string()))
}

async fn run(listener: tokio::net::TcpListener, handle: PrometheusHandle) {
    let upkeep = {
        let handle = handle.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(UPKEEP).await;
                handle.run_upkeep();
            }
        })
    };
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the metrics endpoint stopped");
    }
    upkeep.abort();
}

/// The future of one observed request.
type Observed =
    std::pin::Pin<Box<dyn std::future::Future<Output = axum::response::Response> + Send>>;

/// What [`http_layer`] returns.
pub type HttpLayer = axum::middleware::FromFnLayer<
    fn(axum::extract::Request, axum::middleware::Next) -> Observed,
    (),
    (axum::extract::Request,),
>;

/// An axum layer that counts every request of a router into
/// [`HTTP_REQUESTS`] and times it into [`HTTP_SECONDS`], labelled by the
/// route's pattern (`/v1/coin/{id}`, not the path a client sent, so labels
/// stay few) or `unmatched`. Add it with `Router::layer` after the routes.
pub fn http_layer() -> HttpLayer {
    metrics::describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route, method and status"
    );
    metrics::describe_histogram!(
        HTTP_SECONDS,
        metrics::Unit::Seconds,
        "Time to answer an HTTP request, by route"
    );
    axum::middleware::from_fn(observe_http)
}

fn observe_http(request: axum::extract::Request, next: axum::middleware::Next) -> Observed {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = std::time::Instant::now();
    Box::pin(async move {
        let response = next.run(request).await;
        metrics::counter!(
            HTTP_REQUESTS,
            "route" => route.clone(),
            "method" => method,
            "status" => response.status().as_u16().to_string()
        )
        .increment(1);
        metrics::histogram!(HTTP_SECONDS, "route" => route).record(started.elapsed().as_secs_f64());
        response
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test per process: the recorder is global.
    #[tokio::test]
    async fn serves_what_was_recorded_and_refuses_a_second_recorder() {
        let endpoint = serve("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("serve");
        metrics::counter!("test_things_total", "kind" => "a").increment(3);
        metrics::histogram!("test_wait_seconds").record(0.003);
        let mut stream = tokio::net::TcpStream::connect(endpoint.addr())
            .await
            .expect("connect");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut text = String::new();
        stream.read_to_string(&mut text).await.expect("read");
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("test_things_total{kind=\"a\"} 3"), "{text}");
        assert!(
            text.contains("test_wait_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("test_wait_seconds_bucket{le=\"0.0025\"} 0"),
            "{text}"
        );
        let second = serve("127.0.0.1:0".parse().expect("addr")).await;
        assert!(matches!(second, Err(Error::Recorder(_))), "{second:?}");

        // A router with the layer: requests counted by route pattern.
        let app = axum::Router::new()
            .route("/item/{id}", axum::routing::get(|| async { "ok" }))
            .layer(http_layer());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _api = tokio::spawn(async move { axum::serve(listener, app).await });
        for path in ["/item/1", "/item/2", "/nothing"] {
            get(addr, path).await;
        }
        let text = get(endpoint.addr(), "/metrics").await;
        assert!(
            text.contains(r#"http_requests_total{route="/item/{id}",method="GET",status="200"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"http_requests_total{route="unmatched",method="GET",status="404"} 1"#),
            "{text}"
        );
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .expect("write");
        let mut text = String::new();
        stream.read_to_string(&mut text).await.expect("read");
        text
    }
}

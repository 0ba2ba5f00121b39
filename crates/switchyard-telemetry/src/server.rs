//! The HTTP endpoint: `GET /metrics` (the exposition, `text/plain;
//! version=0.0.4`), `GET /healthz` (200 while the process serves at all) and
//! `GET /readyz` (200, or 503 naming each check that is not ready). It runs on
//! the caller's runtime as one task that [`MetricsServer`] owns: stopped with
//! [`MetricsServer::stop`], or aborted when the handle is dropped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::exposition::CONTENT_TYPE;
use crate::registry::Telemetry;
use crate::{Error, Result};

/// A running telemetry endpoint.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Parses `IP:PORT` (`127.0.0.1:9464`, `0.0.0.0:9464`, `[::]:9464`).
pub fn parse_addr(addr: &str) -> Result<SocketAddr> {
    addr.trim().parse().map_err(|_| Error::InvalidAddr {
        addr: addr.to_owned(),
    })
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free one) and serves `telemetry` there.
    pub async fn start(telemetry: Telemetry, addr: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .with_state(Arc::new(telemetry));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                warn!(error = %e, "The metrics endpoint stopped.");
            }
        });
        debug!(addr = %bound, "Metrics endpoint listening.");
        Ok(Self {
            addr: bound,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address bound (with the port chosen when 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://HOST:PORT/metrics`, with the host as bound (`0.0.0.0` when
    /// listening on every interface).
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.addr)
    }

    /// The same URL with an unspecified host (`0.0.0.0`, `::`) replaced by
    /// loopback: what a client on this machine connects to.
    pub fn local_url(&self, path: &str) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}{path}", SocketAddr::new(ip, self.addr.port()))
    }

    /// Stops serving: requests under way finish, then the task ends.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn metrics(State(t): State<Arc<Telemetry>>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], t.render()).into_response()
}

async fn healthz() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "ok\n",
    )
        .into_response()
}

async fn readyz(State(t): State<Arc<Telemetry>>) -> Response {
    let unready = t.unready();
    let text = |body: String| ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body);
    if unready.is_empty() {
        return (StatusCode::OK, text("ready\n".into())).into_response();
    }
    let mut body = String::from("not ready\n");
    for u in unready {
        body.push_str(&format!("{}: {}\n", u.check, u.reason));
    }
    (StatusCode::SERVICE_UNAVAILABLE, text(body)).into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use super::*;
    use crate::exposition::Family;

    fn telemetry(ready: Arc<AtomicBool>, hits: Arc<AtomicU64>) -> Telemetry {
        let mut t = Telemetry::for_process("9.9.9", "test");
        t.add_renderer(Arc::new(move |out: &mut String| {
            let n = hits.fetch_add(1, Ordering::Relaxed) + 1;
            Family::counter(out, "test_scrapes_total", "Scrapes served.").sample(&[], n as f64);
        }))
        .add_check(
            "budgets",
            Arc::new(move || {
                if ready.load(Ordering::Relaxed) {
                    Ok(())
                } else {
                    Err("still reading the budget snapshots".into())
                }
            }),
        );
        t
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness_over_http() {
        let ready = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicU64::new(0));
        let server = MetricsServer::start(
            telemetry(ready.clone(), hits),
            parse_addr("127.0.0.1:0").unwrap(),
        )
        .await
        .unwrap();
        assert_ne!(server.addr().port(), 0, "port 0 picks a free port");
        assert_eq!(
            server.metrics_url(),
            format!("http://127.0.0.1:{}/metrics", server.addr().port())
        );
        let client = reqwest::Client::new();
        let get = |path: &str| client.get(server.local_url(path)).send();

        let r = get("/metrics").await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE.as_str()],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let body = r.text().await.unwrap();
        assert!(body.contains("switchyard_build_info{version=\"9.9.9\",component=\"test\"} 1\n"));
        assert!(body.contains("test_scrapes_total 1\n"), "{body}");
        let again = get("/metrics").await.unwrap().text().await.unwrap();
        assert!(
            again.contains("test_scrapes_total 2\n"),
            "rendered per scrape"
        );

        let r = get("/healthz").await.unwrap();
        assert_eq!(r.status(), 200);

        let r = get("/readyz").await.unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(
            r.text().await.unwrap(),
            "not ready\nbudgets: still reading the budget snapshots\n"
        );
        ready.store(true, Ordering::Relaxed);
        let r = get("/readyz").await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "ready\n");

        assert_eq!(get("/other").await.unwrap().status(), 404);
        let url = server.local_url("/healthz");
        server.stop().await;
        assert!(client.get(url).send().await.is_err(), "stopped");
    }

    #[tokio::test]
    async fn a_taken_port_is_a_clear_error() {
        let first = MetricsServer::start(Telemetry::default(), parse_addr("127.0.0.1:0").unwrap())
            .await
            .unwrap();
        let err = MetricsServer::start(Telemetry::default(), first.addr())
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("cannot listen for metrics on {}", first.addr())),
            "{err}"
        );
    }

    #[test]
    fn addresses_are_ip_and_port() {
        assert_eq!(parse_addr(" 0.0.0.0:9464").unwrap().port(), 9464);
        assert!(parse_addr("[::]:0").is_ok());
        let err = parse_addr("localhost:9464").unwrap_err().to_string();
        assert!(
            err.contains("`localhost:9464` is not a socket address"),
            "{err}"
        );
        assert!(parse_addr("9464").is_err());
    }
}

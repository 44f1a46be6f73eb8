//! What the HTTP benchmarks share: a store served on a loopback port by the real router,
//! and a timer for GET requests (median after one untimed warm-up).

use std::sync::Arc;
use std::time::Instant;

use probewatch_store::Store;

/// The dashboard and API over `store` on `127.0.0.1:<free port>`; stopped when dropped.
pub struct LoopbackServer {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    runtime: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl LoopbackServer {
    /// Serves `store` with default query limits.
    pub fn start(store: Arc<dyn Store>) -> anyhow::Result<LoopbackServer> {
        let state = probewatch_web::AppState {
            store,
            registry: Arc::new(prometheus_client::registry::Registry::default()),
            index: Arc::new(probewatch_store::SeriesIndex::new()),
            query_options: probewatch_promql::QueryOptions::default(),
            queries: Arc::new(probewatch_web::query_gate::QueryGate::new(4)),
            alerting: None,
            api_token: None,
            access: None,
            status: None,
            reload: None,
            info: Arc::default(),
            remote: None,
            receivers: None,
            maintenance: None,
            inhibitions: None,
            pages: Default::default(),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_stack_size(probewatch_promql::limits::STACK_BYTES)
            .enable_all()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = runtime.spawn(probewatch_web::serve(
            listener,
            state,
            probewatch_web::ServeLimits::default(),
            async {
                let _ = stopped.await;
            },
        ));
        Ok(LoopbackServer {
            base,
            runtime,
            stop: Some(stop),
            server: Some(server),
        })
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = self.runtime.block_on(server);
        }
    }
}

/// Times `GET url` `repeat` times after one untimed request (caches and the series index
/// warm up as in a running daemon): the median in milliseconds and the body's size.
pub fn time_get(
    client: &reqwest::blocking::Client,
    url: &str,
    repeat: usize,
) -> anyhow::Result<(f64, usize)> {
    let mut times = Vec::new();
    let mut bytes = 0;
    for i in 0..=repeat {
        let t = Instant::now();
        let response = client.get(url).send()?;
        anyhow::ensure!(
            response.status().is_success(),
            "GET {url}: {}",
            response.status()
        );
        let body = response.bytes()?;
        if i > 0 {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        bytes = body.len();
    }
    Ok((crate::bench::median(&mut times), bytes))
}

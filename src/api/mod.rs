//! The HTTP API (axum on a single-threaded tokio runtime in its own thread).
//!
//! | path | what |
//! |---|---|
//! | `GET /health` | `{"status":"ok"}` (no token needed) |
//! | `GET /status` | sources, frames, drops, current top tags, step latency |
//! | `GET /labels` | labels with their on/off thresholds |
//! | `GET /events` | Server-Sent Events: `onset`, `offset`, `gap`, `source`, `end`; `?source=NAME` filters |
//! | `GET /ws` | WebSocket: the same JSON messages; `?scores=true` adds per-frame `frame` messages |
//! | `GET /metrics` | Prometheus text |
//!
//! When `api.token` is set every endpoint but `/health` needs `Authorization: Bearer TOKEN`
//! (401 otherwise); the configuration refuses a non-loopback address without a token.
//! Unknown paths are 404, other methods 405, bad query parameters 400.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::stream::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use crate::daemon::bus::{Bus, BusMsg, Kind};
use crate::daemon::stats::Stats;

#[derive(Clone)]
pub struct ApiState {
    pub stats: Arc<Stats>,
    pub bus: Bus,
    pub token: Arc<RwLock<Option<String>>>,
    pub frame_scores: bool,
}

/// A running API server.
pub struct ApiHandle {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ApiHandle {
    /// Stops accepting, lets open responses finish for up to `wait`, then returns.
    pub fn stop(mut self, wait: Duration) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let deadline = std::time::Instant::now() + wait;
            while !t.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

pub fn router(state: ApiState) -> Router {
    let protected = Router::new()
        .route("/status", get(status))
        .route("/labels", get(labels))
        .route("/events", get(events))
        .route("/ws", get(ws))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/health", get(health))
        .merge(protected)
        .with_state(state)
}

/// Binds `addr` now (so a bad address fails start-up) and serves on a new thread.
pub fn start(addr: &str, state: ApiState) -> Result<ApiHandle> {
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app = router(state);
    let thread = crate::daemon::io_thread("api", move || async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("API listener: {e}");
                return;
            }
        };
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await;
        if let Err(e) = r {
            tracing::error!("API server: {e}");
        }
    })?;
    tracing::info!("API listening on http://{local}");
    Ok(ApiHandle {
        addr: local,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timing.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let token = s.token.read().unwrap().clone();
    if let Some(t) = token.filter(|t| !t.is_empty()) {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if !given.is_some_and(|g| same(g.as_bytes(), t.as_bytes())) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(serde_json::json!({"error": "missing or wrong bearer token"})),
            )
                .into_response();
        }
    }
    next.run(req).await
}

async fn health() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

async fn status(State(s): State<ApiState>) -> impl IntoResponse {
    Json(s.stats.status())
}

async fn labels(State(s): State<ApiState>) -> impl IntoResponse {
    let labels: Vec<serde_json::Value> = s
        .stats
        .labels
        .lock()
        .unwrap()
        .iter()
        .map(|(l, on, off)| serde_json::json!({"label": l, "on": on, "off": off}))
        .collect();
    Json(serde_json::json!({"model": s.stats.model.lock().unwrap().clone(), "labels": labels}))
}

async fn metrics(State(s): State<ApiState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.stats.render(),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    source: Option<String>,
}

/// Decrements the client gauge when a stream ends.
struct ClientGuard(Arc<Stats>);

impl ClientGuard {
    fn new(s: &Arc<Stats>) -> Self {
        s.clients.fetch_add(1, Ordering::Relaxed);
        Self(s.clone())
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn events(
    State(s): State<ApiState>,
    Query(q): Query<EventsQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = s.bus.subscribe();
    let guard = ClientGuard::new(&s.stats);
    let stats = s.stats.clone();
    let stream = futures_util::stream::unfold(
        (rx, q.source, guard, false),
        move |(mut rx, filter, guard, done)| {
            let stats = stats.clone();
            async move {
                if done {
                    return None;
                }
                loop {
                    match rx.recv().await {
                        Ok(m) => {
                            if m.kind == Kind::End {
                                let ev = Event::default().event("end").data(m.json.clone());
                                return Some((Ok(ev), (rx, filter, guard, true)));
                            }
                            if m.kind != Kind::Event || !wanted(&m, filter.as_deref()) {
                                continue;
                            }
                            let ev = Event::default().event(m.name).data(m.json.clone());
                            return Some((Ok(ev), (rx, filter, guard, false)));
                        }
                        Err(RecvError::Lagged(n)) => {
                            stats.client_lagged.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(RecvError::Closed) => return None,
                    }
                }
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn wanted(m: &BusMsg, filter: Option<&str>) -> bool {
    filter.is_none_or(|f| f == m.source)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WsQuery {
    source: Option<String>,
    #[serde(default)]
    scores: bool,
}

async fn ws(State(s): State<ApiState>, Query(q): Query<WsQuery>, up: WebSocketUpgrade) -> Response {
    if q.scores && !s.frame_scores {
        return (
            StatusCode::FORBIDDEN,
            Json(serde_json::json!({"error": "per-frame scores are off (api.frame_scores)"})),
        )
            .into_response();
    }
    up.on_upgrade(move |socket| ws_session(socket, s, q))
}

async fn ws_session(mut socket: WebSocket, s: ApiState, q: WsQuery) {
    let mut rx = s.bus.subscribe();
    let _guard = ClientGuard::new(&s.stats);
    let _frames = q.scores.then(|| s.bus.frame_guard());
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Ok(m) => {
                    let send = match m.kind {
                        Kind::End => true,
                        Kind::Event => wanted(&m, q.source.as_deref()),
                        Kind::Frame => q.scores && wanted(&m, q.source.as_deref()),
                    };
                    if send && socket.send(Message::Text(m.json.clone().into())).await.is_err() {
                        return;
                    }
                    if m.kind == Kind::End {
                        let _ = socket.send(Message::Close(None)).await;
                        return;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    s.stats.client_lagged.fetch_add(n, Ordering::Relaxed);
                }
                Err(RecvError::Closed) => return,
            },
            r = socket.recv() => match r {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

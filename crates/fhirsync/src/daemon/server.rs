//! The daemon's HTTP server: `/health` and `/metrics`.
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::status::DaemonState;
use crate::metrics;

fn router(state: Arc<DaemonState>) -> Router {
    Router::new()
        .route("/health", get(health_handler))
        .route("/metrics", get(metrics_handler))
        .with_state(state)
}

async fn health_handler(State(state): State<Arc<DaemonState>>) -> Response {
    let report = state.health();
    let code = if report.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(report),
    )
        .into_response()
}

async fn metrics_handler(State(state): State<Arc<DaemonState>>) -> Response {
    let body = state.metrics_text();
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response()
}

/// Serves `/health` and `/metrics` on `listener` until `stop` fires.
pub(super) async fn serve(
    listener: TcpListener,
    state: Arc<DaemonState>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

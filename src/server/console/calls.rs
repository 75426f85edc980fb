//! The console calling the daemon's own control API as the admin on behalf
//! of a signed-in user (browser sign-in, import, refresh, preview), so the
//! pages use exactly the checks and answers the API has.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, StatusCode};

use super::Console;
use crate::daemon::Daemon;
use crate::server::Control;

impl Console {
    /// Calls the daemon's API as the admin (for a signed-in user): the
    /// answer read as its wire type `T` (from [`crate::api`]), or the status
    /// and reason to show when the call fails.
    pub(super) async fn call_api<T: serde::de::DeserializeOwned>(
        &self,
        daemon: &Arc<Daemon>,
        control: &Arc<Control>,
        method: axum::http::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, (StatusCode, String)> {
        let internal = |e: String| (StatusCode::INTERNAL_SERVER_ERROR, e);
        use hyper::service::Service as _;
        let token = self
            .admin_token
            .get()
            .ok_or_else(|| internal("sign in again: the daemon restarted".into()))?;
        let router = self
            .api
            .get_or_init(|| {
                crate::server::router_control(
                    daemon.clone(),
                    crate::server::ServeOptions::default(),
                    control.clone(),
                )
            })
            .clone();
        let mut request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        let body = match body {
            Some(v) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let request = request.body(body).map_err(|e| internal(e.to_string()))?;
        let service = hyper_util::service::TowerToHyperService::new(router);
        let response = service
            .call(request)
            .await
            .map_err(|e| internal(e.to_string()))?;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 4 * 1024 * 1024)
            .await
            .map_err(|e| internal(e.to_string()))?;
        if !status.is_success() {
            let reason = serde_json::from_slice::<crate::api::ErrorBody>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| format!("the API answered {status}"));
            return Err((status, reason));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            (
                StatusCode::BAD_GATEWAY,
                format!("the API's answer to {path} is not what the console expects: {e}"),
            )
        })
    }
}

//! The console calling the daemon's own control API as the admin on behalf
//! of a signed-in user (browser sign-in, import, refresh, preview), so the
//! pages use exactly the checks and answers the API has.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, StatusCode};

use super::Console;
use crate::engine::daemon::Daemon;
use crate::server::Control;

impl Console {
    /// Calls the daemon's API as the admin (for a signed-in user): the
    /// status and the JSON answer.
    pub(super) async fn call_api(
        &self,
        daemon: &Arc<Daemon>,
        control: &Arc<Control>,
        method: axum::http::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(StatusCode, serde_json::Value), String> {
        use hyper::service::Service as _;
        let token = self
            .admin_token
            .get()
            .ok_or("sign in again: the daemon restarted")?;
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
        let request = request.body(body).map_err(|e| e.to_string())?;
        let service = hyper_util::service::TowerToHyperService::new(router);
        let response = service.call(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 4 * 1024 * 1024)
            .await
            .map_err(|e| e.to_string())?;
        let value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Ok((status, value))
    }
}

/// The answer's `error`, or a generic text.
pub(super) fn api_error(status: StatusCode, value: &serde_json::Value) -> String {
    value["error"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("the API answered {status}"))
}

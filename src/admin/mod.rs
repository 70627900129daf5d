//! The admin listener: `/healthz` (the process is alive), `/readyz` (it
//! should receive traffic: false while shutting down), and the admin API.
//!
//! Invariant: the admin API requires the admin token when one is configured
//! (compared in constant time); the probes never do, so kubelets need no
//! secret.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use subtle::ConstantTimeEq;

use crate::config::Secret;
use crate::error::{json, ApiError, Body};
use crate::shutdown::Shutdown;

pub struct Admin {
    shutdown: Shutdown,
    token: Option<Secret>,
}

impl Admin {
    pub fn new(shutdown: Shutdown, token: Option<Secret>) -> Self {
        Admin { shutdown, token }
    }

    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        match self.route(req).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        }
    }

    async fn route(&self, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let path = req.uri().path();
        match (req.method(), path) {
            (&Method::GET, "/healthz") => Ok(json(StatusCode::OK, &serde_json::json!({"status": "ok"}))),
            (&Method::GET, "/readyz") => {
                if self.shutdown.is_triggered() {
                    Ok(json(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &serde_json::json!({"status": "shutting_down"}),
                    ))
                } else {
                    Ok(json(StatusCode::OK, &serde_json::json!({"status": "ready"})))
                }
            }
            (_, "/healthz") | (_, "/readyz") => Err(ApiError::MethodNotAllowed { allow: "GET".into() }),
            _ => {
                self.authorize(&req)?;
                Err(ApiError::NotFound)
            }
        }
    }

    /// Checks `Authorization: Bearer <token>` when a token is configured.
    fn authorize(&self, req: &Request<Incoming>) -> Result<(), ApiError> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let given = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .ok_or(ApiError::Unauthorized)?;
        if bool::from(given.ct_eq(token.expose())) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

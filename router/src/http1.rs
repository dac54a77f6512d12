//! Serving the public API over HTTP/1.1 on hyper directly: one task per connection,
//! inference requests dispatched straight to the scoring path, every other request
//! through axum's router; graceful shutdown stops accepting and lets in-flight requests
//! finish.
//!
//! Why not `axum::serve`: on two cores every microsecond the router spends comes out of
//! the workers' share. For each request axum's server and router box the body, clone
//! the URI into an `OriginalUri`, insert the matched path and URL parameters into a
//! freshly allocated extension map and percent-decode the path into owned strings. The
//! inference route is the only hot one, so it is matched here on the raw path (names
//! are plain ASCII identifiers; anything else, including a percent-encoded path, takes
//! the general route and answers exactly as before).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse as _, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt as _;
use tracing::debug;

use crate::error::RouterError;
use crate::routes;
use crate::state::AppState;

/// The model and version named by an inference path: `/v2/models/{model}/infer` or
/// `/v2/models/{model}/versions/{version}/infer`. `None` for any other path, and for
/// paths whose segments would need percent-decoding (those take the general route).
pub fn infer_route(path: &str) -> Option<(&str, Option<&str>)> {
    let rest = path.strip_prefix("/v2/models/")?.strip_suffix("/infer")?;
    let plain = |s: &str| !s.is_empty() && !s.contains('%');
    let mut segments = rest.split('/');
    let model = segments.next().filter(|m| plain(m))?;
    match (segments.next(), segments.next(), segments.next()) {
        (None, _, _) => Some((model, None)),
        (Some("versions"), Some(version), None) if plain(version) => Some((model, Some(version))),
        _ => None,
    }
}

/// Serves `listener` until `shutdown` completes, then waits for open connections to
/// finish their current request.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    app: Router,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    // One write per answer: head and (small) body copied into one buffer.
    builder.writev(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = Dispatch {
            state: state.clone(),
            app: app.clone(),
        };
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Routes one request: inference to [`routes::score`], the rest to axum.
#[derive(Clone)]
struct Dispatch {
    state: Arc<AppState>,
    app: Router,
}

type Answer = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Dispatch {
    type Response = Response;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        if request.method() == Method::POST && infer_route(request.uri().path()).is_some() {
            let state = self.state.clone();
            Box::pin(async move {
                let (parts, body) = request.into_parts();
                Ok(match infer_route(parts.uri.path()) {
                    Some((model, version)) => {
                        let body = Body::new(body);
                        routes::score(&state, model, version, &parts.headers, body).await
                    }
                    // Matched above on the same path: cannot happen.
                    None => RouterError::NoRoute.into_response(),
                })
            })
        } else {
            let app = self.app.clone();
            Box::pin(async move { app.oneshot(request.map(Body::new)).await })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::infer_route;
    use proptest::prelude::*;

    #[test]
    fn matches_the_two_infer_paths_only() {
        assert_eq!(infer_route("/v2/models/risk/infer"), Some(("risk", None)));
        assert_eq!(
            infer_route("/v2/models/risk/versions/3/infer"),
            Some(("risk", Some("3")))
        );
        for other in [
            "/v2/models/risk",
            "/v2/models//infer",
            "/v2/models/risk/infer/",
            "/v2/models/a/b/infer",
            "/v2/models/risk/versions//infer",
            "/v2/models/risk/versions/3/x/infer",
            "/v2/models/ri%73k/infer",
            "/v2/models/risk/ready",
            "/v2/health/ready",
        ] {
            assert_eq!(infer_route(other), None, "{other}");
        }
    }

    proptest! {
        /// Whatever the fast path accepts, the names it returns are exactly what axum's
        /// `{model}` / `{version}` segments would capture, so both routes agree.
        #[test]
        fn agrees_with_segment_splitting(
            model in "[a-zA-Z0-9._%/-]{0,12}",
            version in proptest::option::of("[a-zA-Z0-9._%/-]{0,6}"),
        ) {
            let path = match &version {
                Some(v) => format!("/v2/models/{model}/versions/{v}/infer"),
                None => format!("/v2/models/{model}/infer"),
            };
            if let Some((m, v)) = infer_route(&path) {
                let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
                prop_assert!(!m.contains(['/', '%']) && !m.is_empty());
                match v {
                    None => prop_assert_eq!(segments, vec!["v2", "models", m, "infer"]),
                    Some(v) => {
                        prop_assert!(!v.contains(['/', '%']) && !v.is_empty());
                        prop_assert_eq!(segments, vec!["v2", "models", m, "versions", v, "infer"]);
                    }
                }
            }
        }
    }
}

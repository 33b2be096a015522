//! Doors without an API key (DESIGN.md §5 "hooks"): per-trigger URLs, app webhooks with
//! signature checks, webhook blocks. Served by the `hook` function on AWS.

use crate::app::AppState;
use axum::Router;

pub fn routes() -> Router<AppState> {
    Router::new()
}

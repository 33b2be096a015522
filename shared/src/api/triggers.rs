//! Managing the doors (API key): a workflow's trigger URLs and the account's apps.

use crate::app::AppState;
use axum::Router;

pub fn routes() -> Router<AppState> {
    Router::new()
}

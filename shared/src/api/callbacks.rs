//! Outbound callbacks (API key): the account's signing secret, a run's delivery log and
//! redelivery.

use crate::app::AppState;
use axum::Router;

pub fn routes() -> Router<AppState> {
    Router::new()
}

//! `delay`: sleeps for a duration (chained delayed messages beyond the queue's maximum).

use super::{Outcome, StepError, invalid, render};
use crate::duration::delay_of;
use crate::graph::Block;
use serde_json::Value;

pub(super) fn run(block: &Block, data: &Value) -> Result<Outcome, StepError> {
    let cfg = render(&block.config, data)?;
    delay_of(&cfg).map(Outcome::Sleep).map_err(invalid)
}

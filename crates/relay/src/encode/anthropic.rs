//! STUB: to be written.

use super::dialect::{Ctx, Out};
use crate::event::EventRef;

#[derive(Debug, Default)]
pub struct Encoder {}

impl super::dialect::Encoder for Encoder {
    fn event(&mut self, _out: &mut Out<'_>, _ctx: &Ctx, _event: EventRef<'_>) {}

    fn body(&self, _ctx: &Ctx) -> Option<serde_json::Value> {
        None
    }
}

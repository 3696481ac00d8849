//! `GET /v1/usage`: the calling team's counters and limits. In open mode (no teams), the
//! gateway's totals with `"team": null`.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::{Extension, Json};
use serde_json::{json, Value};

use crate::access::Caller;
use crate::state::AppState;

pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Json<Value> {
    Json(state.access.usage(&caller).unwrap_or_else(|| {
        let g = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let (p, c) = (
            g(&state.metrics.prompt_tokens),
            g(&state.metrics.completion_tokens),
        );
        json!({
            "object": "team.usage",
            "team": null,
            "requests": g(&state.metrics.chat_completions),
            "prompt_tokens": p,
            "completion_tokens": c,
            "total_tokens": p + c,
        })
    }))
}

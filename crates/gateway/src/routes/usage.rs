//! `GET /v1/usage`: the calling team's counters and limits. In open mode (no teams), the
//! gateway's totals with `"team": null`.

use axum::extract::State;
use axum::{Extension, Json};
use serde_json::{json, Value};

use crate::access::Caller;
use crate::state::AppState;

pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Json<Value> {
    Json(state.access.usage(&caller).await.unwrap_or_else(|| {
        let t = &state.metrics.totals;
        let (p, c) = (t.prompt_tokens.get(), t.completion_tokens.get());
        json!({
            "object": "team.usage",
            "team": null,
            "requests": t.requests.get(),
            "prompt_tokens": p,
            "completion_tokens": c,
            "total_tokens": p.saturating_add(c),
        })
    }))
}

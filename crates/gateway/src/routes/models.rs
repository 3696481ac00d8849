//! `GET /v1/models`: the models this caller may use, in OpenAI's list shape.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use crate::access::Caller;
use crate::state::AppState;

pub async fn list(State(state): State<AppState>, Extension(caller): Extension<Caller>) -> Response {
    let data: Vec<_> = state
        .router
        .all_models()
        .await
        .into_iter()
        .filter(|(m, _)| state.access.may_use(&caller, m))
        .map(|(id, owner)| json!({ "id": id, "object": "model", "created": 0, "owned_by": owner }))
        .collect();
    let mut resp = Json(json!({ "object": "list", "data": data })).into_response();
    resp.headers_mut()
        .extend(state.access.headers(&caller).await);
    resp
}

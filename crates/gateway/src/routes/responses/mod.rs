//! STUB: the OpenAI Responses API (`POST /v1/responses`, `GET /v1/responses/{id}`,
//! `POST /v1/responses/{id}/cancel`).

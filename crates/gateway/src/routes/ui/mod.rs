//! STUB: the AI SDK's UI message stream (`POST /v1/ui/chat`, `GET|DELETE
//! /v1/ui/chat/{chatId}/stream`).

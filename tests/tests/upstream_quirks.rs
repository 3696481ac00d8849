//! Real upstreams, end to end: a scripted upstream replays what OpenAI-compatible servers
//! (vLLM, llama.cpp, Ollama, Gemini, Mistral, Groq, DeepSeek, OpenRouter) and Anthropic really
//! send, quirks included, and the client must get a well-formed OpenAI stream with the same
//! answer, or the upstream's own error. Also the upstream-side limits: one SSE event is capped
//! (many capped lines must not grow memory), and the end of an answer is judged by what arrived.
//!
//! Longer than most test files (~650 lines) on purpose: each server's recorded quirks are one
//! fixture and one test, and they are read together.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::e2e::{
    assert_error_shape, assert_failed_stream, chat, check_openai_wire, chunks, content_of, data,
    error_events, finish_reasons, openai_provider, post_collect, provider, sse_steps, up_chunk,
    up_text, up_usage, SseEvent,
};
use sluice_tests::scripted::{full_response, serve, ScriptedUpstream, Step};
use sluice_tests::Gateway;

const LIMIT: Duration = Duration::from_secs(20);

/// Concatenated `delta.reasoning_content` of choice 0.
fn reasoning_of(events: &[SseEvent]) -> String {
    chunks(events)
        .iter()
        .filter_map(|c| c["choices"].as_array())
        .flatten()
        .filter_map(|c| c["delta"]["reasoning_content"].as_str().map(str::to_owned))
        .collect()
}

/// The tool calls of choice 0 as a client assembles them: by index, id and name from the first
/// fragment that has them, arguments concatenated.
fn tool_calls_of(events: &[SseEvent]) -> BTreeMap<u64, (String, String, String)> {
    let mut calls: BTreeMap<u64, (String, String, String)> = BTreeMap::new();
    for c in chunks(events) {
        for tc in c["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = tc["index"].as_u64().expect("every tool call has an index");
            let e = calls.entry(index).or_default();
            if let Some(id) = tc["id"].as_str() {
                e.0 = id.to_owned();
            }
            if let Some(name) = tc["function"]["name"].as_str() {
                e.1 = name.to_owned();
            }
            if let Some(args) = tc["function"]["arguments"].as_str() {
                e.2.push_str(args);
            }
        }
    }
    calls
}

/// Every chunk in OpenAI's shape, whatever the upstream left out: a non-empty `id` and `model`,
/// `object`, a numeric `created`, and an `index` on every choice.
fn assert_openai_shaped(events: &[SseEvent], what: &str) {
    for c in chunks(events) {
        assert!(
            c["id"].as_str().is_some_and(|s| !s.is_empty()),
            "{what}: {c}"
        );
        assert!(
            c["model"].as_str().is_some_and(|s| !s.is_empty()),
            "{what}: {c}"
        );
        assert_eq!(c["object"], "chat.completion.chunk", "{what}: {c}");
        assert!(c["created"].as_u64().is_some(), "{what}: {c}");
        for choice in c["choices"].as_array().expect("choices") {
            assert!(choice["index"].as_u64().is_some(), "{what}: {c}");
        }
    }
}

/// What the client must see.
enum Expect {
    /// A complete answer: content, thinking text, finish reason and usage (prompt, completion).
    Answer {
        content: &'static str,
        reasoning: &'static str,
        finish: &'static str,
        usage: (u64, u64),
    },
    /// Tool calls by index: (id, name, arguments).
    Tools(&'static [(&'static str, &'static str, &'static str)]),
    /// An in-band error after `content`, with the upstream's type and message.
    Failed {
        content: &'static str,
        kind: &'static str,
        message: &'static str,
    },
    /// An HTTP error before the stream, with the upstream's status, type and message.
    Http {
        status: u16,
        kind: &'static str,
        message: &'static str,
    },
}

struct Case {
    /// Server, quirk, and where it is documented.
    what: &'static str,
    steps: Vec<Step>,
    expect: Expect,
}

fn sse(events: &[Value]) -> Vec<String> {
    events.iter().map(data).collect()
}

fn with_done(mut v: Vec<String>) -> Vec<String> {
    v.push("data: [DONE]\n\n".to_owned());
    v
}

fn cases() -> Vec<Case> {
    let finish = |reason: &str| up_chunk(0, json!({}), Some(reason));
    vec![
        Case {
            what: "llama.cpp / Mistral / vLLM: id, object, created, model and choices[].index \
                   left out or null, delta.role absent, content null, finish_reason \"\" \
                   (https://github.com/ggml-org/llama.cpp/issues/14268, \
                   https://github.com/mistralai/client-python/issues/16)",
            steps: sse_steps(with_done(sse(&[
                json!({"choices": [{"delta": {"content": null}}]}),
                json!({"id": "", "model": "", "created": null,
                       "choices": [{"index": null, "delta": {"content": "Hel"}, "finish_reason": ""}]}),
                json!({"object": null, "choices": [{"delta": {"role": null, "content": "lo"},
                       "finish_reason": ""}]}),
                json!({"choices": [{"delta": {}, "finish_reason": "stop"}]}),
                json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}),
            ]))),
            expect: Expect::Answer {
                content: "Hello",
                reasoning: "",
                finish: "stop",
                usage: (3, 2),
            },
        },
        Case {
            what: "Groq: usage only in x_groq.usage on the finish chunk \
                   (https://github.com/Portkey-AI/gateway/issues/1072)",
            steps: sse_steps(with_done(sse(&[
                json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "llama",
                       "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}],
                       "x_groq": {"id": "req_1"}}),
                json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "llama",
                       "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                       "x_groq": {"id": "req_1", "usage": {"queue_time": 0.01, "prompt_tokens": 7,
                       "prompt_time": 0.001, "completion_tokens": 1, "total_tokens": 8}}}),
            ]))),
            expect: Expect::Answer {
                content: "Hi",
                reasoning: "",
                finish: "stop",
                usage: (7, 1),
            },
        },
        Case {
            what: "vLLM continuous_usage_stats / xAI: usage on every content chunk, the last one \
                   with finish_reason (https://github.com/BerriAI/litellm/issues/17136)",
            steps: sse_steps(with_done(sse(&[
                json!({"choices": [{"index": 0, "delta": {"content": "a"}}],
                       "usage": {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5}}),
                json!({"choices": [{"index": 0, "delta": {"content": "b"}, "finish_reason": "length"}],
                       "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}}),
            ]))),
            expect: Expect::Answer {
                content: "ab",
                reasoning: "",
                finish: "length",
                usage: (4, 2),
            },
        },
        Case {
            what: "DeepSeek: thinking in delta.reasoning_content with content null \
                   (https://api-docs.deepseek.com/guides/reasoning_model)",
            steps: sse_steps(with_done(sse(&[
                json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": null,
                       "reasoning_content": "hm"}}]}),
                json!({"choices": [{"index": 0, "delta": {"content": "Yes", "reasoning_content": null}}]}),
                json!({"choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5,
                       "prompt_tokens_details": {"cached_tokens": null}}}),
            ]))),
            expect: Expect::Answer {
                content: "Yes",
                reasoning: "hm",
                finish: "stop",
                usage: (2, 3),
            },
        },
        Case {
            what: "vLLM 0.11+ / OpenRouter / Ollama: thinking in delta.reasoning, some vLLM \
                   versions also in reasoning_content with the same text \
                   (https://github.com/vllm-project/vllm/pull/34030)",
            steps: sse_steps(with_done(sse(&[
                json!({"choices": [{"index": 0, "delta": {"reasoning": "a"}}]}),
                json!({"choices": [{"index": 0, "delta": {"reasoning": "b", "reasoning_content": "b"}}]}),
                json!({"choices": [{"index": 0, "delta": {"content": "c"}, "finish_reason": "stop"}]}),
                up_usage(1, 3),
            ]))),
            expect: Expect::Answer {
                content: "c",
                reasoning: "ab",
                finish: "stop",
                usage: (1, 3),
            },
        },
        Case {
            what: "Mistral Magistral: delta.content as a list of thinking and text parts, \
                   finish_reason model_length (https://github.com/BerriAI/litellm/issues/16272, \
                   https://docs.mistral.ai/api/)",
            steps: sse_steps(with_done(sse(&[
                json!({"choices": [{"index": 0, "delta": {"content": [{"type": "thinking",
                       "thinking": [{"type": "text", "text": "'s a greeting"}]}]}}]}),
                json!({"choices": [{"index": 0, "delta": {"content": [{"type": "text", "text": "Hello"}]}}]}),
                json!({"choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "model_length"}],
                       "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}}),
            ]))),
            expect: Expect::Answer {
                content: "Hello",
                reasoning: "'s a greeting",
                finish: "length",
                usage: (5, 9),
            },
        },
        Case {
            what: "OpenRouter: `: OPENROUTER PROCESSING` comments between events \
                   (https://openrouter.ai/docs/api-reference/streaming)",
            steps: sse_steps([
                ": OPENROUTER PROCESSING\n\n".to_owned(),
                data(&up_text("Hi")),
                ": OPENROUTER PROCESSING\n\n".to_owned(),
                data(&finish("stop")),
                data(&up_usage(1, 1)),
                "data: [DONE]\n\n".to_owned(),
            ]),
            expect: Expect::Answer {
                content: "Hi",
                reasoning: "",
                finish: "stop",
                usage: (1, 1),
            },
        },
        Case {
            what: "llama.cpp before 2024-09, ik_llama.cpp, TGI before 2.1.1: no data: [DONE], \
                   the last line without its blank line \
                   (https://github.com/ggml-org/llama.cpp/pull/9459, \
                   https://github.com/ikawrakow/ik_llama.cpp/issues/467)",
            steps: sse_steps([
                data(&up_text("Hi")),
                data(&finish("stop")),
                format!("data: {}\n", up_usage(2, 1)),
            ]),
            expect: Expect::Answer {
                content: "Hi",
                reasoning: "",
                finish: "stop",
                usage: (2, 1),
            },
        },
        Case {
            what: "llama-cpp-python (sse-starlette): CRLF line endings \
                   (https://github.com/sysid/sse-starlette, DEFAULT_SEPARATOR)",
            steps: sse_steps(
                with_done(sse(&[up_text("Hi"), finish("stop"), up_usage(2, 1)]))
                    .into_iter()
                    .map(|e| e.replace('\n', "\r\n")),
            ),
            expect: Expect::Answer {
                content: "Hi",
                reasoning: "",
                finish: "stop",
                usage: (2, 1),
            },
        },
        Case {
            what: "Gemini: tool_calls without index, each call whole with its arguments, \
                   finish_reason stop (https://github.com/openai/openai-python/issues/2806, \
                   https://github.com/open-webui/computer/issues/224)",
            steps: sse_steps(with_done(sse(&[
                json!({"choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [
                    {"id": "call_a", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}},
                    {"id": "call_b", "type": "function",
                     "function": {"name": "get_time", "arguments": "{}"}}]}}],
                       "model": "gemini-2.5-flash", "object": "chat.completion.chunk"}),
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                    {"id": "call_c", "type": "function", "function": {"name": "add", "arguments": "{\"a\":"}}]}}]}),
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                    {"function": {"arguments": "1}"}}]}}]}),
                json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            ]))),
            expect: Expect::Tools(&[
                ("call_a", "get_weather", "{\"city\":\"Oslo\"}"),
                ("call_b", "get_time", "{}"),
                ("call_c", "add", "{\"a\":1}"),
            ]),
        },
        Case {
            what: "OpenRouter: mid-stream error chunk with an error object (no type) and \
                   finish_reason \"error\" (https://openrouter.ai/docs/api-reference/errors)",
            steps: sse_steps([
                data(&up_text("Par")),
                data(&json!({"id": "gen-1", "object": "chat.completion.chunk", "created": 1,
                    "model": "m", "provider": "X",
                    "error": {"code": 502, "message": "Provider returned error"},
                    "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error",
                                 "native_finish_reason": "error"}]})),
            ]),
            expect: Expect::Failed {
                content: "Par",
                kind: "upstream_error",
                message: "Provider returned error",
            },
        },
        Case {
            what: "Mistral / OpenRouter: finish_reason \"error\" with no error object \
                   (https://docs.mistral.ai/api/)",
            steps: sse_steps([data(&up_text("Par")), data(&finish("error"))]),
            expect: Expect::Failed {
                content: "Par",
                kind: "upstream_error",
                message: "the upstream ended choice 0 with finish_reason \"error\"",
            },
        },
        Case {
            what: "llama.cpp until 2025-09: mid-stream error as an `error:` SSE line, then \
                   [DONE] (https://github.com/ggml-org/llama.cpp/pull/16109)",
            steps: sse_steps([
                data(&up_text("Par")),
                "error: {\"code\":400,\"message\":\"the request exceeds the available context size\",\"type\":\"invalid_request_error\"}\n\n".to_owned(),
                "data: [DONE]\n\n".to_owned(),
            ]),
            expect: Expect::Failed {
                content: "Par",
                kind: "invalid_request_error",
                message: "the request exceeds the available context size",
            },
        },
        Case {
            what: "mid-stream error object without type \
                   (https://github.com/apache/rocketmq-dashboard/issues/2178)",
            steps: sse_steps([
                data(&up_text("Par")),
                data(&json!({"error": {"message": "quota exceeded"}})),
                "data: [DONE]\n\n".to_owned(),
            ]),
            expect: Expect::Failed {
                content: "Par",
                kind: "upstream_error",
                message: "quota exceeded",
            },
        },
        Case {
            what: "Ollama-style mid-stream error as a plain string",
            steps: sse_steps([
                data(&up_text("Par")),
                data(&json!({"error": "model runner has unexpectedly stopped"})),
            ]),
            expect: Expect::Failed {
                content: "Par",
                kind: "upstream_error",
                message: "model runner has unexpectedly stopped",
            },
        },
        Case {
            what: "Gemini: HTTP error body as a list [{\"error\":{...,\"status\":...}}] \
                   (https://github.com/google-gemini/gemini-cli/issues/5472)",
            steps: vec![full_response(
                400,
                "application/json",
                "",
                json!([{"error": {"code": 400, "message": "Invalid JSON payload received.",
                                  "status": "INVALID_ARGUMENT"}}])
                .to_string()
                .as_bytes(),
            )],
            expect: Expect::Http {
                status: 400,
                kind: "INVALID_ARGUMENT",
                message: "Invalid JSON payload received.",
            },
        },
        Case {
            what: "vLLM before 0.10.1: error fields at the top level \
                   (https://github.com/vllm-project/vllm/issues/12886)",
            steps: vec![full_response(
                400,
                "application/json",
                "",
                json!({"object": "error", "message": "maximum context length is 2048 tokens",
                       "type": "BadRequestError", "param": null, "code": 400})
                .to_string()
                .as_bytes(),
            )],
            expect: Expect::Http {
                status: 400,
                kind: "BadRequestError",
                message: "maximum context length is 2048 tokens",
            },
        },
        Case {
            what: "FastAPI servers (vLLM routes, llama-cpp-python): {\"detail\": [...]} \
                   validation errors (https://fastapi.tiangolo.com/tutorial/handling-errors/)",
            steps: vec![full_response(
                422,
                "application/json",
                "",
                json!({"detail": [{"loc": ["body", "messages"], "msg": "Field required",
                                   "type": "missing"}]})
                .to_string()
                .as_bytes(),
            )],
            expect: Expect::Http {
                status: 422,
                kind: "upstream_error",
                message: "Field required",
            },
        },
        Case {
            what: "API gateways in front of a server: {\"message\": ...} \
                   (https://docs.aws.amazon.com/apigateway/latest/developerguide/supported-gateway-response-types.html)",
            // (A 403 would be the provider refusing the gateway's key: a 502 of the gateway's.)
            steps: vec![full_response(
                404,
                "application/json",
                "",
                br#"{"message":"Not Found"}"#,
            )],
            expect: Expect::Http {
                status: 404,
                kind: "upstream_error",
                message: "Not Found",
            },
        },
    ]
}

#[tokio::test]
async fn openai_compatible_servers_quirks_reach_the_client_as_openai() {
    let cases = cases();
    let mut toml = String::new();
    let mut upstreams: Vec<ScriptedUpstream> = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let up = serve(case.steps.clone()).await;
        toml.push_str(&openai_provider(
            &format!("up{i}"),
            &up.base_url(),
            &[&format!("case-{i}")],
        ));
        upstreams.push(up);
    }
    let sluice = Gateway::builder().config(&toml).demo(false).start();
    for (i, case) in cases.iter().enumerate() {
        let what = case.what;
        let a = post_collect(
            &sluice.url("/v1/chat/completions"),
            &chat(
                &format!("case-{i}"),
                true,
                json!({"stream_options": {"include_usage": true}}),
            ),
            LIMIT,
        )
        .await;
        if let Expect::Http {
            status,
            kind,
            message,
        } = case.expect
        {
            assert_eq!(a.status, status, "{what}: {}", a.body);
            let body = a.json();
            let err = assert_error_shape(&body);
            assert_eq!(err["type"], kind, "{what}: {body}");
            assert_eq!(err["message"], message, "{what}: {body}");
            continue;
        }
        assert_eq!(a.status, 200, "{what}: {}", a.body);
        assert!(a.transport_error.is_none(), "{what}");
        let events = check_openai_wire(&a.body);
        assert_openai_shaped(&events, what);
        match case.expect {
            Expect::Answer {
                content,
                reasoning,
                finish,
                usage,
            } => {
                assert!(
                    error_events(&events).is_empty(),
                    "{what}: {}\nlogs:\n{}",
                    a.body,
                    sluice.logs()
                );
                assert_eq!(content_of(&events, 0), content, "{what}");
                assert_eq!(reasoning_of(&events), reasoning, "{what}");
                assert_eq!(
                    finish_reasons(&events),
                    vec![(0, finish.to_owned())],
                    "{what}"
                );
                let u = &events[events.len() - 2].json()["usage"];
                assert_eq!(
                    (u["prompt_tokens"].as_u64(), u["completion_tokens"].as_u64()),
                    (Some(usage.0), Some(usage.1)),
                    "{what}: {}",
                    a.body
                );
                assert_eq!(u["total_tokens"].as_u64(), Some(usage.0 + usage.1));
                assert!(a.body.ends_with("data: [DONE]\n\n"), "{what}");
            }
            Expect::Tools(expected) => {
                assert!(error_events(&events).is_empty(), "{what}: {}", a.body);
                let got = tool_calls_of(&events);
                let want: BTreeMap<u64, (String, String, String)> = expected
                    .iter()
                    .enumerate()
                    .map(|(i, (id, name, args))| {
                        (
                            i as u64,
                            ((*id).to_owned(), (*name).to_owned(), (*args).to_owned()),
                        )
                    })
                    .collect();
                assert_eq!(got, want, "{what}: {}", a.body);
                assert!(a.body.ends_with("data: [DONE]\n\n"), "{what}");
            }
            Expect::Failed {
                content,
                kind,
                message,
            } => {
                assert_eq!(content_of(&events, 0), content, "{what}");
                let err = assert_failed_stream(&events, kind);
                assert_eq!(err["message"], message, "{what}");
            }
            Expect::Http { .. } => unreachable!(),
        }
    }
}

#[tokio::test]
async fn anthropic_stop_reason_then_a_clean_close_without_message_stop_is_complete() {
    let head = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    );
    let stop = concat!(
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":4}}\n\n",
    );
    let complete = serve(sse_steps([head, stop])).await;
    let cut = serve(sse_steps([head])).await;
    let anthropic = |name: &str, up: &ScriptedUpstream, model: &str| {
        provider(
            name,
            "anthropic",
            &format!("http://{}", up.addr),
            &[model],
            None,
        )
    };
    let sluice = Gateway::builder()
        .config(&format!(
            "{}{}",
            anthropic("complete", &complete, "claude-complete"),
            anthropic("cut", &cut, "claude-cut")
        ))
        .demo(false)
        .start();
    let a = post_collect(
        &sluice.url("/v1/chat/completions"),
        &chat(
            "claude-complete",
            true,
            json!({"stream_options": {"include_usage": true}}),
        ),
        LIMIT,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let events = check_openai_wire(&a.body);
    assert!(error_events(&events).is_empty(), "{}", a.body);
    assert_eq!(content_of(&events, 0), "Hello");
    assert_eq!(finish_reasons(&events), vec![(0, "stop".to_owned())]);
    assert_eq!(
        events[events.len() - 2].json()["usage"],
        json!({"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9,
               "prompt_tokens_details": {"cached_tokens": 0}})
    );
    assert!(a.body.ends_with("data: [DONE]\n\n"), "{}", a.body);
    // Cut before any stop reason: still a truncation.
    let a = post_collect(
        &sluice.url("/v1/chat/completions"),
        &chat("claude-cut", true, json!({})),
        LIMIT,
    )
    .await;
    let events = check_openai_wire(&a.body);
    assert_eq!(content_of(&events, 0), "Hello");
    assert_failed_stream(&events, "upstream_truncated");
}

/// The relay writes the finish reasons received before a failure ahead of the error event.
#[tokio::test]
async fn with_n_2_a_finished_choice_keeps_its_finish_reason_when_the_other_is_cut() {
    let steps = sse_steps([
        data(&up_chunk(
            0,
            json!({"role": "assistant", "content": "a"}),
            None,
        )),
        data(&up_chunk(
            1,
            json!({"role": "assistant", "content": "b"}),
            None,
        )),
        data(&up_chunk(0, json!({}), Some("stop"))),
        data(&up_chunk(1, json!({"content": "c"}), None)),
    ]);
    let up = serve(steps).await;
    let sluice = Gateway::builder()
        .config(&openai_provider("up", &up.base_url(), &["*"]))
        .demo(false)
        .start();
    let a = post_collect(
        &sluice.url("/v1/chat/completions"),
        &chat("m", true, json!({"n": 2})),
        LIMIT,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let events = check_openai_wire(&a.body);
    assert_eq!(content_of(&events, 0), "a");
    assert_eq!(content_of(&events, 1), "bc");
    assert_eq!(finish_reasons(&events), vec![(0, "stop".to_owned())]);
    let n = events.len();
    assert_eq!(
        events[n - 2].json()["choices"][0]["finish_reason"],
        "stop",
        "choice 0's finish chunk comes just before the error: {}",
        a.body
    );
    let last = events[n - 1].json();
    assert_eq!(last["error"]["type"], "upstream_truncated", "{}", a.body);
    assert!(!events.iter().any(SseEvent::is_done));
}

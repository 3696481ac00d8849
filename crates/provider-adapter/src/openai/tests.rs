use super::*;

fn map(events: &[&str]) -> (Vec<StreamEvent>, Result<(), AdapterError>) {
    let mut m = ChunkMapper::default();
    let mut out = VecDeque::new();
    for e in events {
        match m.on_event("message", e, &mut out) {
            Ok(true) => break,
            Ok(false) => {}
            Err(err) => return (out.into_iter().collect(), Err(err)),
        }
    }
    let end = m.on_end(&mut out);
    (out.into_iter().collect(), end)
}

#[test]
fn plain_text_stream() {
    let (evs, end) = map(&[
        r#"{"id":"c1","object":"chat.completion.chunk","created":5,"model":"gpt","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}"#,
        r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#,
        r#"{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        r#"{"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#,
        "[DONE]",
    ]);
    end.unwrap();
    assert_eq!(
        evs,
        vec![
            StreamEvent::Meta(ResponseMeta {
                id: Some("c1".into()),
                model: Some("gpt".into()),
                created: Some(5),
                system_fingerprint: None
            }),
            StreamEvent::Delta(ChoiceDelta::text(0, "Hel")),
            StreamEvent::Finish {
                choice: 0,
                reason: FinishReason::Stop
            },
            StreamEvent::Usage(Usage {
                prompt_tokens: 3,
                completion_tokens: 1,
                total_tokens: 4,
                ..Usage::default()
            }),
        ]
    );
}

#[test]
fn tool_calls_logprobs_refusal_and_reasoning_are_kept() {
    let (evs, end) = map(&[
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":"}}]}}]}"#,
        r#"{"choices":[{"index":1,"delta":{"content":"x"},"logprobs":{"content":[{"token":"x","logprob":-0.1}]}}]}"#,
        r#"{"choices":[{"index":1,"delta":{"refusal":"no"}}]}"#,
        r#"{"choices":[{"index":1,"delta":{"reasoning_content":"hmm"}}]}"#,
        r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"},{"index":1,"delta":{},"finish_reason":"stop"}]}"#,
    ]);
    end.unwrap();
    let StreamEvent::Delta(d) = &evs[0] else {
        panic!()
    };
    assert_eq!(d.tool_calls[0].id.as_deref(), Some("call_1"));
    assert_eq!(d.tool_calls[0].name.as_deref(), Some("f"));
    let StreamEvent::Delta(d) = &evs[1] else {
        panic!()
    };
    assert_eq!(d.tool_calls[0].arguments.as_deref(), Some("{\"a\":"));
    let StreamEvent::Delta(d) = &evs[2] else {
        panic!()
    };
    assert_eq!(
        d.logprobs.as_ref().unwrap().get(),
        r#"{"content":[{"token":"x","logprob":-0.1}]}"#
    );
    let StreamEvent::Delta(d) = &evs[3] else {
        panic!()
    };
    assert_eq!(d.refusal.as_deref(), Some("no"));
    let StreamEvent::Delta(d) = &evs[4] else {
        panic!()
    };
    assert_eq!(d.reasoning.as_deref(), Some("hmm"));
    assert_eq!(evs.len(), 7);
}

#[test]
fn unfinished_choice_is_truncation() {
    let (_, end) = map(&[r#"{"choices":[{"index":0,"delta":{"content":"Hel"}}]}"#]);
    assert!(matches!(end, Err(AdapterError::Truncated(_))));
    let (_, end) = map(&[
        r#"{"choices":[{"index":0,"delta":{"content":"a"}},{"index":1,"delta":{"content":"b"}}]}"#,
        r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        "[DONE]",
    ]);
    assert!(matches!(end, Err(AdapterError::Truncated(_))));
}

#[test]
fn error_chunk_keeps_upstream_type_and_message() {
    let (evs, end) = map(&[
        r#"{"choices":[{"index":0,"delta":{"content":"a"}}]}"#,
        r#"{"error":{"message":"overloaded","type":"server_error","code":"busy"}}"#,
    ]);
    assert_eq!(evs.len(), 1);
    let Err(AdapterError::Upstream {
        kind,
        message,
        code,
        ..
    }) = end
    else {
        panic!("{end:?}")
    };
    assert_eq!(
        (kind.as_str(), message.as_str(), code.as_deref()),
        ("server_error", "overloaded", Some("busy"))
    );
}

#[test]
fn usage_reports_with_missing_or_odd_fields_do_not_fail_the_stream() {
    let finish = r#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]}"#;
    let (evs, end) = map(&[
        finish,
        r#"{"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":7}}"#,
    ]);
    end.unwrap();
    assert_eq!(
        evs.last(),
        Some(&StreamEvent::Usage(Usage {
            prompt_tokens: 4,
            completion_tokens: 7,
            total_tokens: 11,
            ..Usage::default()
        }))
    );
    for odd in [
        r#"{"choices":[],"usage":null}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":"4"}}"#,
    ] {
        let (evs, end) = map(&[finish, odd]);
        end.unwrap();
        assert!(
            !evs.iter().any(|e| matches!(e, StreamEvent::Usage(_))),
            "{odd}"
        );
    }
}

fn text_of(evs: &[StreamEvent]) -> (String, String) {
    let mut content = String::new();
    let mut reasoning = String::new();
    for e in evs {
        if let StreamEvent::Delta(d) = e {
            content.push_str(d.content.as_deref().unwrap_or_default());
            reasoning.push_str(d.reasoning.as_deref().unwrap_or_default());
        }
    }
    (content, reasoning)
}

#[test]
fn fields_left_out_nulled_or_oddly_typed_do_not_fail_the_chunk() {
    let (evs, end) = map(&[
        // llama.cpp: `"model":""`; no id; `created` as a float; `index: null`.
        r#"{"model":"","created":1.7e9,"choices":[{"index":null,"delta":{"role":"assistant","content":null},"finish_reason":""}]}"#,
        r#"{"id":42,"object":null,"choices":[{"delta":{"content":"Hel","role":null},"finish_reason":null}]}"#,
        r#"{"choices":[{"delta":{"content":"lo"},"logprobs":null,"finish_reason":""}],"usage":{"prompt_tokens":2,"completion_tokens":null,"prompt_tokens_details":{"cached_tokens":null}}}"#,
        r#"{"choices":[{"delta":{},"finish_reason":"stop"}],"usage":null}"#,
    ]);
    end.unwrap();
    assert!(
        !evs.iter().any(|e| matches!(e, StreamEvent::Meta(_))),
        "{evs:?}"
    );
    assert_eq!(text_of(&evs).0, "Hello");
    assert!(evs.contains(&StreamEvent::Usage(Usage {
        prompt_tokens: 2,
        total_tokens: 2,
        prompt_tokens_details: Some(crate::event::PromptTokensDetails { cached_tokens: 0 }),
        ..Usage::default()
    })));
    assert_eq!(
        evs.last(),
        Some(&StreamEvent::Finish {
            choice: 0,
            reason: FinishReason::Stop
        })
    );
}

#[test]
fn upstream_numbers_are_bounded() {
    // Usage near u64::MAX saturates instead of wrapping.
    let (evs, end) = map(&[
        r#"{"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}]}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":5}}"#,
        "[DONE]",
    ]);
    end.unwrap();
    let Some(StreamEvent::Usage(u)) = evs.last() else {
        panic!("{evs:?}")
    };
    assert_eq!(u.total_tokens, u64::MAX);
    // A huge choice index is a number to track, never a size.
    let (evs, end) = map(&[
        r#"{"choices":[{"index":4294967295,"delta":{"content":"x"},"finish_reason":"stop"}]}"#,
        "[DONE]",
    ]);
    end.unwrap();
    assert_eq!(evs.len(), 2, "{evs:?}");
    // Distinct choices past the cap end the stream with a protocol error.
    let many: Vec<String> = (0..=MAX_CHOICES)
        .map(|i| format!(r#"{{"choices":[{{"index":{i},"delta":{{"content":"x"}}}}]}}"#))
        .collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let (evs, end) = map(&refs);
    assert!(matches!(end, Err(AdapterError::Protocol(_))), "{end:?}");
    assert_eq!(
        evs.len(),
        MAX_CHOICES,
        "the choices before the cap are delivered"
    );
}

#[test]
fn usage_from_groq_and_on_content_chunks() {
    let u = |p, c| {
        StreamEvent::Usage(Usage {
            prompt_tokens: p,
            completion_tokens: c,
            total_tokens: p + c,
            ..Usage::default()
        })
    };
    let (evs, end) = map(&[
        r#"{"id":"x","choices":[{"index":0,"delta":{"content":"a"}}],"x_groq":{"id":"req_1"}}"#,
        r#"{"id":"x","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"x_groq":{"id":"req_1","usage":{"queue_time":0.1,"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}}"#,
    ]);
    end.unwrap();
    assert_eq!(evs.last(), Some(&u(3, 1)));
    // vLLM's continuous usage: every content chunk reports; each is passed on.
    let (evs, end) = map(&[
        r#"{"choices":[{"index":0,"delta":{"content":"a"}}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#,
        r#"{"choices":[{"index":0,"delta":{"content":"b"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#,
    ]);
    end.unwrap();
    assert_eq!(text_of(&evs).0, "ab");
    assert_eq!(evs.last(), Some(&u(3, 2)));
}

#[test]
fn reasoning_in_every_field_name_and_mistral_content_parts() {
    let (evs, end) = map(&[
        r#"{"choices":[{"index":0,"delta":{"reasoning_content":"a","content":null}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"reasoning":"b"}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"reasoning":"c","reasoning_content":"c"}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"reasoning_content":"","reasoning":"d"}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"content":[{"type":"thinking","thinking":[{"type":"text","text":"e"}]}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"content":[{"type":"text","text":"Hi"}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"content":""},"finish_reason":"model_length"}]}"#,
    ]);
    end.unwrap();
    assert_eq!(text_of(&evs), ("Hi".into(), "abcde".into()));
    assert_eq!(
        evs.last(),
        Some(&StreamEvent::Finish {
            choice: 0,
            reason: FinishReason::Length
        })
    );
}

#[test]
fn tool_calls_without_index_are_numbered_and_whole_arguments_kept() {
    let (evs, end) = map(&[
        // Gemini: two calls, whole, no index, in one chunk; then one split in two.
        r#"{"choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}},{"id":"b","type":"function","function":{"name":"g","arguments":"{}"}}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"id":"c","function":{"name":"h","arguments":"{\"y\":"}}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"function":{"arguments":"2}"}}]}}]}"#,
        // Arguments sent as an object, not a string.
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":null,"id":"d","function":{"name":"k","arguments":{"z":[1]}}}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
    ]);
    end.unwrap();
    let calls: Vec<(u32, Option<&str>, Option<&str>)> = evs
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Delta(d) => Some(&d.tool_calls),
            _ => None,
        })
        .flatten()
        .map(|t| (t.index, t.id.as_deref(), t.arguments.as_deref()))
        .collect();
    assert_eq!(
        calls,
        vec![
            (0, Some("a"), Some("{\"x\":1}")),
            (1, Some("b"), Some("{}")),
            (2, Some("c"), Some("{\"y\":")),
            (2, None, Some("2}")),
            (3, Some("d"), Some("{\"z\":[1]}")),
        ]
    );
}

#[test]
fn error_events_in_other_shapes_keep_the_upstreams_words() {
    let kind_msg = |events: &[&str]| match map(events).1 {
        Err(AdapterError::Upstream { kind, message, .. }) => (kind, message),
        other => panic!("{events:?}: {other:?}"),
    };
    let first = r#"{"choices":[{"index":0,"delta":{"content":"a"}}]}"#;
    for (what, event, kind, message) in [
        (
            "vLLM < 0.10.1",
            r#"{"object":"error","message":"too long","type":"BadRequestError","param":null,"code":400}"#,
            "BadRequestError",
            "too long",
        ),
        (
            "llama.cpp error: field",
            r#" {"code":500,"message":"context full","type":"server_error"}"#,
            "server_error",
            "context full",
        ),
        (
            "Gemini list",
            r#"[{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}]"#,
            "RESOURCE_EXHAUSTED",
            "quota",
        ),
        (
            "FastAPI",
            r#"{"detail":"Internal Server Error"}"#,
            "upstream_error",
            "Internal Server Error",
        ),
        (
            "error as text",
            r#"{"error":"model crashed"}"#,
            "upstream_error",
            "model crashed",
        ),
        (
            "OpenRouter",
            r#"{"id":"gen-1","object":"chat.completion.chunk","error":{"code":502,"message":"Provider disconnected"},"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}"#,
            "upstream_error",
            "Provider disconnected",
        ),
    ] {
        assert_eq!(
            kind_msg(&[first, event]),
            (kind.to_owned(), message.to_owned()),
            "{what}"
        );
    }
    let (_, msg) = kind_msg(&[
        first,
        r#"{"choices":[{"index":0,"delta":{},"finish_reason":"error"}]}"#,
    ]);
    assert!(msg.contains("finish_reason \"error\""), "{msg}");
    // A usage chunk and Azure's prompt-filter chunk are not errors.
    let (_, end) = map(&[
        r#"{"choices":[],"prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}]}"#,
        first,
        r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        r#"{"usage":{"prompt_tokens":1,"completion_tokens":1}}"#,
    ]);
    end.unwrap();
}

#[test]
fn invalid_json_is_a_protocol_error() {
    let (_, end) = map(&["{not json"]);
    assert!(matches!(end, Err(AdapterError::Protocol(_))));
}

#[test]
fn forwarded_body_golden() {
    let body = |req: &str, stream: bool| {
        let req = ChatRequest::parse(req.as_bytes()).unwrap();
        String::from_utf8(build_request("http://h/v1", None, &req, stream).body).unwrap()
    };
    // Keys stay in the client's order; `stream` and `stream_options` change in place.
    let req = r#"{"model":"m","stream":false,"messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":false,"x":1},"n":1}"#;
    assert_eq!(
        body(req, true),
        r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":true,"x":1},"n":1}"#
    );
    assert_eq!(
        body(req, false),
        r#"{"model":"m","stream":false,"messages":[{"role":"user","content":"hi"}],"n":1}"#
    );
    // Absent ones are added at the end.
    let req = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(
        body(req, true),
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#
    );
}

#[test]
fn request_forces_usage_and_keeps_unknown_fields() {
    let req = ChatRequest::parse(
        br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"seed":1,"stream_options":{"x":1},"vendor_ext":[1,2]}"#,
    )
    .unwrap();
    let up = build_request("http://h/v1", Some("sk-1"), &req, true);
    assert_eq!(up.url, "http://h/v1/chat/completions");
    let body: Value = serde_json::from_slice(&up.body).unwrap();
    assert_eq!(
        body["stream_options"],
        serde_json::json!({"x":1,"include_usage":true})
    );
    assert_eq!(body["seed"], 1);
    assert_eq!(body["vendor_ext"], serde_json::json!([1, 2]));
    assert!(up
        .headers
        .contains(&("authorization", "Bearer sk-1".to_owned())));
}

//! Field types that read what OpenAI-compatible servers really send, not what OpenAI documents.
//!
//! A chunk is parsed once into borrowed structs; with plain `Option<Cow<str>>` or `u32` fields a
//! single odd value (`"index": null`, `"created": 1.7e9`, `"id": 42`, Mistral's `content` as a
//! list of parts) fails the whole chunk and with it the user's answer. These types accept every
//! shape and read the ones that carry nothing as absent. Each is a hand-written visitor, so the
//! common case (a string borrowed from the event's data) allocates nothing.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// The visitor methods shared by [`Text`] and [`Num`] for the value types they do not read:
/// each reads as `$none`, and a list or an object is skipped over.
macro_rules! ignore_other_types {
    ($none:expr) => {
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($none)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok($none)
        }
    };
}

/// A string field. Absent, `null`, `""` and values of any other type all read as `None`
/// (servers send `"finish_reason": ""`, `"id": ""`, `"model": null`).
#[derive(Debug, Default)]
pub(crate) struct Text<'a>(pub Option<Cow<'a, str>>);

impl<'a> Text<'a> {
    pub fn into_owned(self) -> Option<String> {
        self.0.map(Cow::into_owned)
    }

    pub fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text((!v.is_empty()).then_some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text((!v.is_empty()).then(|| Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text((!v.is_empty()).then_some(Cow::Owned(v))))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            ignore_other_types!(Text(None));
        }
        d.deserialize_any(V)
    }
}

/// A count or index: any non-negative number (integer or float); anything else is `None`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Num(pub Option<u64>);

impl Num {
    pub fn as_u32(self) -> Option<u32> {
        self.0.and_then(|n| u32::try_from(n).ok())
    }
}

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_u64<E>(self, v: u64) -> Result<Num, E> {
                Ok(Num(Some(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Num, E> {
                Ok(Num(u64::try_from(v).ok()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Num, E> {
                // Truncation is what is wanted (`1.7e9` seconds); NaN and negatives are nothing.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Ok(Num((v.is_finite() && v >= 0.0).then_some(v as u64)))
            }
            fn visit_str<E>(self, _: &str) -> Result<Num, E> {
                Ok(Num(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Num, D::Error> {
                d.deserialize_any(self)
            }
            ignore_other_types!(Num(None));
        }
        d.deserialize_any(V)
    }
}

/// `delta.content`: a string as OpenAI sends it, or a list of typed parts as Mistral's
/// reasoning models (Magistral) send it: `[{"type":"text","text":"..."}]` and
/// `[{"type":"thinking","thinking":[{"type":"text","text":"..."}]}]`.
/// <https://github.com/BerriAI/litellm/issues/16272>
#[derive(Debug, Default)]
pub(crate) struct Content<'a> {
    pub text: Option<Cow<'a, str>>,
    /// Thinking parts, joined.
    pub thinking: Option<String>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Content<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of content parts")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Content {
                    text: Some(Cow::Borrowed(v)),
                    thinking: None,
                })
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Content {
                    text: Some(Cow::Owned(v.to_owned())),
                    thinking: None,
                })
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Content {
                    text: Some(Cow::Owned(v)),
                    thinking: None,
                })
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                // Rare (one server family), so plain `Value`s are good enough here.
                let mut text = String::new();
                let mut thinking = String::new();
                while let Some(part) = seq.next_element::<Value>()? {
                    match part.get("type").and_then(Value::as_str) {
                        Some("thinking") => push_texts(&mut thinking, part.get("thinking")),
                        // `text`, and untyped parts that have a text.
                        _ => push_texts(&mut text, part.get("text")),
                    }
                }
                Ok(Content {
                    text: (!text.is_empty()).then_some(Cow::Owned(text)),
                    thinking: (!thinking.is_empty()).then_some(thinking),
                })
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Content::default())
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Content::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Content::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Content::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Content::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Content::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Content::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// Appends the text of `v`: a string, or a list of parts with `text` strings.
fn push_texts(out: &mut String, v: Option<&Value>) {
    match v {
        Some(Value::String(s)) => out.push_str(s),
        Some(Value::Array(parts)) => {
            for p in parts {
                if let Some(t) = p.get("text").and_then(Value::as_str) {
                    out.push_str(t);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct T<'a> {
        #[serde(borrow, default)]
        s: Text<'a>,
        #[serde(default)]
        n: Num,
        #[serde(borrow, default)]
        c: Content<'a>,
    }

    fn t(json: &str) -> (Option<String>, Option<u64>, Option<String>, Option<String>) {
        let v: T<'_> = serde_json::from_str(json).expect(json);
        (
            v.s.into_owned(),
            v.n.0,
            v.c.text.map(Cow::into_owned),
            v.c.thinking,
        )
    }

    #[test]
    fn every_shape_reads_and_odd_ones_are_absent() {
        assert_eq!(t(r#"{"s":"a","n":3,"c":"x"}"#).0.as_deref(), Some("a"));
        for odd in [
            r#"{"s":null,"n":null,"c":null}"#,
            r#"{"s":"","n":-1,"c":{}}"#,
            r#"{"s":7,"n":"7","c":7}"#,
            r#"{"s":[1,{"a":[]}],"n":{"a":1},"c":true}"#,
            r#"{"s":{"x":"y"},"n":[1],"c":false}"#,
            "{}",
        ] {
            assert_eq!(t(odd), (None, None, None, None), "{odd}");
        }
        assert_eq!(t(r#"{"n":1.7e9}"#).1, Some(1_700_000_000));
        // An escaped string cannot be borrowed; it is still read.
        assert_eq!(t(r#"{"s":"a\"b"}"#).0.as_deref(), Some("a\"b"));
    }

    #[test]
    fn content_parts_split_into_text_and_thinking() {
        let (_, _, text, thinking) = t(
            r#"{"c":[{"type":"thinking","thinking":[{"type":"text","text":"hm"},{"type":"text","text":"m"}]},{"type":"text","text":"Hi"},{"type":"image_url"}]}"#,
        );
        assert_eq!(text.as_deref(), Some("Hi"));
        assert_eq!(thinking.as_deref(), Some("hmm"));
        let (_, _, text, thinking) = t(r#"{"c":[{"type":"thinking","thinking":"s"}]}"#);
        assert_eq!((text, thinking.as_deref()), (None, Some("s")));
    }
}

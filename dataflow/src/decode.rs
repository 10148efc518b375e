//! JSON → [`Event`], per the event contract. Fields are borrowed from the input where possible;
//! every failure is a [`Rejection`] with a reason and a detail, never a panic.

use std::borrow::Cow;
use std::fmt;

use schema::event::{sym, Event, Sym, NONE};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use smallvec::SmallVec;
use xxhash_rust::xxh3::xxh3_64;

use crate::reject::{Reason, Rejection};

pub const MAX_EVENT_BYTES: usize = 64 * 1024;
const MAX_USER_ID: usize = 256;
pub const MAX_EVENT_NAME: usize = 128;
/// 2000-01-01T00:00:00Z
pub const MIN_TS_MS: i64 = 946_684_800_000;
pub const MAX_FUTURE_MS: i64 = 24 * 3600 * 1000;
const BAD_TS: &str = "bad_ts:";

/// A decoded event with the texts behind its symbols, borrowed from the input.
#[derive(Debug)]
pub struct Decoded<'a> {
    pub event: Event,
    /// Hash of the producer's `event_id`, for de-duplication.
    pub event_id: Option<u64>,
    /// Hash of the producer's `session_id`.
    pub session_id: Option<u64>,
    pub user_id: Cow<'a, str>,
    /// `(key, value)` symbols of `props`.
    pub props: SmallVec<[(Sym, Sym); 2]>,
    pub name: Cow<'a, str>,
    pub page: Option<Cow<'a, str>>,
    pub utm_source: Option<Cow<'a, str>>,
    pub device: Option<Cow<'a, str>>,
    pub country: Option<Cow<'a, str>>,
    /// The client address, for per-IP alert rules and rate limits.
    pub ip: Option<Cow<'a, str>>,
    /// Acquisition and client facts that enrichment reads (not shown by any view as they are).
    pub referrer: Option<Cow<'a, str>>,
    pub user_agent: Option<Cow<'a, str>>,
    pub utm_medium: Option<Cow<'a, str>>,
    pub utm_campaign: Option<Cow<'a, str>>,
    pub partner: Option<Cow<'a, str>>,
    /// `props` as texts, in order (`props` holds their symbols).
    pub prop_texts: SmallVec<[(Cow<'a, str>, Cow<'a, str>); 2]>,
}

impl Decoded<'_> {
    /// `(symbol, text)` of every string field the views show.
    pub fn texts(&self) -> impl Iterator<Item = (u64, &str)> {
        let e = &self.event;
        [
            Some((e.name, self.name.as_ref())),
            self.page.as_deref().map(|t| (e.page, t)),
            self.utm_source.as_deref().map(|t| (e.utm_source, t)),
            self.device.as_deref().map(|t| (e.device, t)),
            self.country.as_deref().map(|t| (e.country, t)),
        ]
        .into_iter()
        .flatten()
    }
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    user_id: Option<Text<'a>>,
    #[serde(borrow)]
    event: Option<Text<'a>>,
    ts: Option<Ts>,
    #[serde(borrow)]
    event_id: Option<Text<'a>>,
    #[serde(borrow)]
    page: Option<Text<'a>>,
    #[serde(borrow)]
    utm_source: Option<Text<'a>>,
    #[serde(borrow)]
    device: Option<Text<'a>>,
    #[serde(borrow)]
    country: Option<Text<'a>>,
    // Validated for type, not yet used by a view.
    #[serde(borrow)]
    referrer: Option<Text<'a>>,
    #[serde(borrow)]
    session_id: Option<Text<'a>>,
    #[serde(borrow)]
    ip: Option<Text<'a>>,
    #[serde(borrow)]
    user_agent: Option<Text<'a>>,
    #[serde(borrow)]
    utm_medium: Option<Text<'a>>,
    #[serde(borrow)]
    utm_campaign: Option<Text<'a>>,
    #[serde(borrow)]
    partner: Option<Text<'a>>,
    #[serde(borrow)]
    props: Option<Props<'a>>,
}

/// A string field, borrowed from the input unless it contains escapes (serde's own `Cow` support
/// does not borrow inside an `Option`).
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// `ts`: integer epoch milliseconds or an RFC 3339 string.
struct Ts(i64);

impl<'de> Deserialize<'de> for Ts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Ts;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("epoch milliseconds or an RFC 3339 string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Ts, E> {
                Ok(Ts(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Ts, E> {
                i64::try_from(v).map(Ts).map_err(|_| E::custom(format!("{BAD_TS} {v} is not a time")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Ts, E> {
                Err(E::custom(format!("{BAD_TS} {v} is not whole milliseconds")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Ts, E> {
                chrono::DateTime::parse_from_rfc3339(v)
                    .map(|t| Ts(t.timestamp_millis()))
                    .map_err(|e| E::custom(format!("{BAD_TS} `{v}` is not RFC 3339 ({e})")))
            }
        }
        d.deserialize_any(V)
    }
}

/// `props`: an object whose values are strings, numbers or booleans, as `(key, value)` texts
/// (a number or boolean as its text: `42`, `1.5`, `true`).
/// (A `Vec`: `SmallVec` is not covariant in its lifetime, which borrowing needs.)
struct Props<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'de: 'a, 'a> Deserialize<'de> for Props<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Props<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of strings, numbers and booleans")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Props<'de>, A::Error> {
                let mut props = Vec::new();
                while let Some((key, Scalar(value))) = map.next_entry::<Text<'de>, Scalar<'de>>()? {
                    props.push((key.0, value));
                }
                Ok(Props(props))
            }
        }
        d.deserialize_map(V)
    }
}

/// A property value's text, borrowed where the input allows.
struct Scalar<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar<'de>, E> {
                Ok(Scalar(Cow::Borrowed(if v { "true" } else { "false" })))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar<'de>, E> {
                Ok(Scalar(Cow::Owned(v.to_string())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar<'de>, E> {
                Ok(Scalar(Cow::Owned(v.to_string())))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar<'de>, E> {
                Ok(Scalar(Cow::Owned(v.to_string())))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Scalar<'de>, E> {
                Ok(Scalar(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar<'de>, E> {
                Ok(Scalar(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_any(V)
    }
}

/// Decodes one event. `now_ms` bounds `ts` from above (a day of clock skew is allowed).
pub fn decode(bytes: &[u8], now_ms: i64) -> Result<Decoded<'_>, Rejection> {
    if bytes.len() > MAX_EVENT_BYTES {
        return Err(Rejection::new(Reason::TooLarge, format!("{} bytes; the limit is {MAX_EVENT_BYTES}", bytes.len())));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Rejection::new(Reason::NotUtf8, format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
    let raw: Raw = serde_json::from_str(text).map_err(|e| classify(text, e))?;
    let user_id = required(raw.user_id, "user_id")?;
    let name = required(raw.event, "event")?;
    let ts = raw.ts.ok_or_else(|| Rejection::new(Reason::MissingField, "`ts` is required"))?.0;
    check_len("user_id", &user_id, MAX_USER_ID)?;
    check_len("event", &name, MAX_EVENT_NAME)?;
    if ts < MIN_TS_MS || ts > now_ms.saturating_add(MAX_FUTURE_MS) {
        return Err(Rejection::new(
            Reason::TsOutOfRange,
            format!("ts {ts} ({}) is before 2000-01-01 or more than a day ahead of now", schema::time::rfc3339(ts)),
        ));
    }
    let (page, utm_source, device, country) =
        (optional(raw.page), optional(raw.utm_source), optional(raw.device), optional(raw.country));
    let opt = |v: &Option<Cow<str>>| v.as_deref().map(sym).unwrap_or(NONE);
    let event = Event {
        ts,
        user: xxh3_64(user_id.as_bytes()),
        name: sym(&name),
        page: opt(&page),
        utm_source: opt(&utm_source),
        device: opt(&device),
        country: opt(&country),
    };
    let prop_texts: SmallVec<[(Cow<str>, Cow<str>); 2]> =
        raw.props.map(|p| p.0.into_iter().collect()).unwrap_or_default();
    Ok(Decoded {
        event,
        event_id: raw.event_id.map(|id| xxh3_64(id.0.as_bytes())),
        session_id: optional(raw.session_id).map(|id| xxh3_64(id.as_bytes())),
        props: prop_texts.iter().map(|(k, v)| (sym(k), sym(v))).collect(),
        prop_texts,
        user_id,
        name,
        page,
        utm_source,
        device,
        country,
        ip: optional(raw.ip),
        referrer: optional(raw.referrer),
        user_agent: optional(raw.user_agent),
        utm_medium: optional(raw.utm_medium),
        utm_campaign: optional(raw.utm_campaign),
        partner: optional(raw.partner),
    })
}

/// An optional field; an empty string counts as absent.
fn optional(value: Option<Text<'_>>) -> Option<Cow<'_, str>> {
    value.map(|t| t.0).filter(|s| !s.is_empty())
}

fn required<'a>(value: Option<Text<'a>>, field: &str) -> Result<Cow<'a, str>, Rejection> {
    value.map(|t| t.0).ok_or_else(|| Rejection::new(Reason::MissingField, format!("`{field}` is required")))
}

fn check_len(field: &str, value: &str, max: usize) -> Result<(), Rejection> {
    if value.is_empty() || value.len() > max {
        return Err(Rejection::new(
            Reason::InvalidField,
            format!("`{field}` must be 1..{max} bytes, got {}", value.len()),
        ));
    }
    Ok(())
}

/// Turns a serde error into a reason; on a type error, decodes again to name the field.
fn classify(text: &str, err: serde_json::Error) -> Rejection {
    use serde_json::error::Category;
    match err.classify() {
        Category::Data => {
            let mut de = serde_json::Deserializer::from_str(text);
            let path = match serde_path_to_error::deserialize::<_, Raw>(&mut de) {
                Err(e) => e.path().to_string(),
                Ok(_) => String::from("?"),
            };
            let message = err.to_string();
            if let Some(rest) = message.strip_prefix(BAD_TS) {
                Rejection::new(Reason::BadTs, format!("`ts`:{rest}"))
            } else if message.starts_with("invalid type: map") && path == "." {
                Rejection::new(Reason::WrongType, "the event must be a JSON object")
            } else {
                let shown = if path == "." { "event".to_string() } else { format!("`{path}`") };
                Rejection::new(Reason::WrongType, format!("{shown}: {message}"))
            }
        }
        _ => Rejection::new(Reason::InvalidJson, err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_780_000_000_000;

    fn reason(bytes: &[u8]) -> Reason {
        decode(bytes, NOW).unwrap_err().reason
    }

    #[test]
    fn decodes_a_full_event_and_borrows_plain_strings() {
        let line = br#"{"user_id":"u1","event":"page_view","ts":1779999999000,"page":"/p","utm_source":"google","device":"mobile","country":"DE","props":{"a":1,"b":"x","c":true},"event_id":"e1"}"#;
        let d = decode(line, NOW).unwrap();
        assert_eq!(d.event.ts, 1_779_999_999_000);
        assert!(d.event.is_page_view());
        assert!(matches!(d.page, Some(Cow::Borrowed("/p"))));
        assert_eq!(d.event.page, sym("/p"));
        assert!(d.event_id.is_some());
        assert_eq!(d.texts().count(), 5);
    }

    #[test]
    fn accepts_rfc3339_ts() {
        let d = decode(br#"{"user_id":"u","event":"click","ts":"2026-05-28T20:26:40Z"}"#, NOW).unwrap();
        assert_eq!(d.event.ts, 1_780_000_000_000);
        assert_eq!(d.event.page, NONE);
    }

    #[test]
    fn rejects_with_reasons() {
        assert_eq!(reason(b"{\"user_id\":"), Reason::InvalidJson);
        assert_eq!(reason(b"[1,2]"), Reason::WrongType);
        assert_eq!(reason(&[b'{', 0xff, b'}']), Reason::NotUtf8);
        assert_eq!(reason(br#"{"event":"x","ts":1779999999000}"#), Reason::MissingField);
        assert_eq!(reason(br#"{"user_id":"u","ts":1779999999000}"#), Reason::MissingField);
        assert_eq!(reason(br#"{"user_id":"u","event":"x"}"#), Reason::MissingField);
        assert_eq!(reason(br#"{"user_id":5,"event":"x","ts":1779999999000}"#), Reason::WrongType);
        assert_eq!(reason(br#"{"user_id":"","event":"x","ts":1779999999000}"#), Reason::InvalidField);
        assert_eq!(reason(br#"{"user_id":"u","event":"x","ts":"yesterday"}"#), Reason::BadTs);
        assert_eq!(reason(br#"{"user_id":"u","event":"x","ts":12.5}"#), Reason::BadTs);
        assert_eq!(reason(br#"{"user_id":"u","event":"x","ts":5}"#), Reason::TsOutOfRange);
        assert_eq!(reason(br#"{"user_id":"u","event":"x","ts":1789999999000}"#), Reason::TsOutOfRange);
        assert_eq!(reason(br#"{"user_id":"u","event":"x","ts":1779999999000,"props":{"a":[1]}}"#), Reason::WrongType);
        let big = format!(r#"{{"user_id":"u","event":"x","ts":1779999999000,"page":"{}"}}"#, "a".repeat(70_000));
        assert_eq!(reason(big.as_bytes()), Reason::TooLarge);
    }

    #[test]
    fn type_errors_name_the_field() {
        let r = decode(br#"{"user_id":"u","event":"x","ts":1779999999000,"page":7}"#, NOW).unwrap_err();
        assert!(r.detail.contains("`page`"), "{}", r.detail);
    }
}

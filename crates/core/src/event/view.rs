//! Reading an event without copying it: what an enqueue from bytes checks before it
//! stores the event's bytes as they are ([`super::ValidEvent`]). The strings the rules
//! look at are borrowed from the bytes, so one with an escape in it cannot be read
//! here: such an event goes to the full reader.
//!
//! It accepts what [`CallEvent`](super::CallEvent) accepts and no more. Every field goes
//! through the same deserializer call as there: strings as strings, times and numbers
//! as the same types, `details` and metadata values through `deserialize_any` as a JSON
//! `Value` is (so a number out of range fails here too). The rules after reading are
//! the same [`Checked`]. Whatever this reader refuses is read again by `CallEvent`, which
//! names the field; so it has to be as strict, never stricter in effect. The fuzz
//! property `an_event_kept_as_its_bytes_makes_the_same_job` holds the two together.

use std::fmt;

use chrono::{DateTime, FixedOffset};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use super::facts::MapOnly;
use super::{Checked, Direction, EndedReason, Shape};

/// serde_json's private key for a raw value inside a map, which its `Value` reads
/// specially: a map with such a key is left to `CallEvent` to decide.
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
// The fields the rules do not look at are read to check their type only.
#[allow(dead_code)]
pub(super) struct EventView<'a> {
    pub call_id: &'a str,
    pub agent_id: &'a str,
    #[serde(default)]
    caller_number: Option<&'a str>,
    #[serde(default)]
    agent_name: Option<AnyString>,
    #[serde(default)]
    started_at: Option<DateTime<FixedOffset>>,
    #[serde(default)]
    ended_at: Option<DateTime<FixedOffset>>,
    #[serde(default)]
    duration_seconds: Option<u64>,
    #[serde(default)]
    summary: Option<AnyString>,
    #[serde(default)]
    transcript: Option<AnyString>,
    #[serde(default)]
    recording_url: Option<&'a str>,
    #[serde(default)]
    details: Option<Shape>,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    traceparent: Option<&'a str>,
    #[serde(default)]
    platform: Option<&'a str>,
    #[serde(default)]
    ended_reason: Option<EndedReason>,
    #[serde(default)]
    platform_ended_reason: Option<AnyString>,
    #[serde(default)]
    direction: Option<Direction>,
    #[serde(default)]
    analysis: Option<MapOnly<AnalysisView>>,
    #[serde(default)]
    raw: Option<Shape>,
}

/// `analysis`, read as [`super::Analysis`] is.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct AnalysisView {
    #[serde(default)]
    successful: Option<bool>,
    #[serde(default)]
    sentiment: Option<AnyString>,
    #[serde(default)]
    data: Option<Shape>,
}

impl EventView<'_> {
    pub(super) fn checked(&self) -> Checked<'_> {
        Checked {
            call_id: self.call_id,
            agent_id: self.agent_id,
            caller_number: self.caller_number,
            started_at: self.started_at,
            ended_at: self.ended_at,
            recording_url: self.recording_url,
            traceparent: self.traceparent,
            details: self.details,
            caller_name: self.metadata.caller_name,
            caller_email: self.metadata.caller_email,
            platform: self.platform,
            analysis_data: self.analysis.as_ref().and_then(|a| a.0.data),
            raw: self.raw,
        }
    }
}

/// Any JSON string, not kept.
struct AnyString;

impl<'de> Deserialize<'de> for AnyString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(Str(|_| Ok(AnyString)))
    }
}

/// A map key, compared without being kept.
enum Key {
    CallerName,
    CallerEmail,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(Str(|s| match s {
            "caller_name" => Ok(Key::CallerName),
            "caller_email" => Ok(Key::CallerEmail),
            RAW_VALUE_TOKEN => Err("left to the full reader"),
            _ => Ok(Key::Other),
        }))
    }
}

/// A visitor of a borrowed or passing string, read by the function it holds into what
/// the view keeps of it.
struct Str<T>(fn(&str) -> Result<T, &'static str>);

impl<T> Visitor<'_> for Str<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
        (self.0)(s).map_err(E::custom)
    }
}

/// The free-form metadata object: only the shapes of the two fields the rules look at
/// are kept (the last of each, as in a map).
#[derive(Default)]
struct Metadata {
    caller_name: Option<Shape>,
    caller_email: Option<Shape>,
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Metadata;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Metadata, A::Error> {
                let mut m = Metadata::default();
                while let Some(key) = map.next_key::<Key>()? {
                    let shape = map.next_value::<Shape>()?;
                    match key {
                        Key::CallerName => m.caller_name = Some(shape),
                        Key::CallerEmail => m.caller_email = Some(shape),
                        Key::Other => {}
                    }
                }
                Ok(m)
            }
        }
        d.deserialize_map(V)
    }
}

/// Any JSON value, read as `Value` reads it (`deserialize_any`), not kept.
impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Shape;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
                Ok(Shape::String)
            }
            fn visit_unit<E>(self) -> Result<Shape, E> {
                Ok(Shape::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
                while seq.next_element::<Shape>()?.is_some() {}
                Ok(Shape::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
                while map.next_key::<Key>()?.is_some() {
                    map.next_value::<Shape>()?;
                }
                Ok(Shape::Object)
            }
        }
        d.deserialize_any(V)
    }
}

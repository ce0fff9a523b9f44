//! What a call's outcome was, as later rules need it: why it ended (normalised), which
//! way it went, and the platform's analysis. Producers may send them on `POST /calls`;
//! the platform intake (`crate::intake`) fills them from each platform's own fields.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why a call ended, normalised across platforms. The platform's own value is kept
/// beside it in `platform_ended_reason`.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndedReason {
    /// The conversation ran to its end (neither side is known to have hung up first).
    Completed,
    /// The caller (the person, in either direction) hung up.
    CallerHungUp,
    /// The agent ended the call.
    AgentHungUp,
    /// A voicemail or answering machine answered.
    Voicemail,
    /// Nobody answered.
    NoAnswer,
    /// The line was busy.
    Busy,
    /// The call was transferred to someone else.
    Transferred,
    /// Silence, inactivity or the maximum duration ended it.
    TimedOut,
    /// The call could not be placed or broke (dial errors, platform errors, payment).
    Failed,
    /// Anything else the platform reported.
    Other,
}

impl EndedReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndedReason::Completed => "completed",
            EndedReason::CallerHungUp => "caller_hung_up",
            EndedReason::AgentHungUp => "agent_hung_up",
            EndedReason::Voicemail => "voicemail",
            EndedReason::NoAnswer => "no_answer",
            EndedReason::Busy => "busy",
            EndedReason::Transferred => "transferred",
            EndedReason::TimedOut => "timed_out",
            EndedReason::Failed => "failed",
            EndedReason::Other => "other",
        }
    }
}

/// Which way the call went. Web calls have none.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// The platform's post-call analysis. Every field is optional: platforms leave them
/// empty on calls that did not connect.
#[serde_with::skip_serializing_none]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Analysis {
    /// Whether the call reached its goal, as the platform judged it.
    pub successful: Option<bool>,
    /// The caller's sentiment, lower-cased (`positive`, `neutral`, `negative`, `unknown`).
    pub sentiment: Option<String>,
    /// The platform's structured or custom analysis data: an object.
    pub data: Option<Value>,
}

impl Analysis {
    pub fn is_empty(&self) -> bool {
        self.successful.is_none() && self.sentiment.is_none() && self.data.is_none()
    }
}

/// A struct read from a JSON object only: serde's derived structs also read an array
/// by position, which the schema (and a reader in another language) would refuse.
pub(crate) struct MapOnly<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for MapOnly<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData)).map(MapOnly)
    }
}

/// `deserialize_with` for an optional struct field read from an object only.
pub(crate) fn optional_map<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<MapOnly<T>>::deserialize(d)?.map(|m| m.0))
}

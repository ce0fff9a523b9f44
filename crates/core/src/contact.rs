//! Contacts: a channel (SMS, e-mail) and an address, written one way so an opt-out
//! recorded from one source (a STOP reply, the API) matches a send to the same person.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A channel a follow-up reaches a person through.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Sms,
    Email,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Email => "email",
        }
    }

    pub fn parse(s: &str) -> Result<Channel, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sms" => Ok(Channel::Sms),
            "email" | "e-mail" => Ok(Channel::Email),
            other => Err(format!("`{other}` is not a channel (sms, email)")),
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `address` as stored for `channel`: an E.164 number without spaces, dashes or
/// parentheses; an e-mail address trimmed and lower-cased (the part inside `<…>` when a
/// display name is given).
pub fn normalize(channel: Channel, address: &str) -> Result<String, String> {
    match channel {
        Channel::Sms => {
            let n: String = address
                .chars()
                .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
                .collect();
            if crate::event::is_e164(&n) {
                Ok(n)
            } else {
                Err(format!("`{address}` is not an E.164 number"))
            }
        }
        Channel::Email => {
            let a = address.trim();
            let a = match (a.rfind('<'), a.ends_with('>')) {
                (Some(i), true) => &a[i + 1..a.len() - 1],
                _ => a,
            };
            crate::config::check_address(a)?;
            Ok(a.trim().to_lowercase())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_one_way() {
        let cases = [
            (Channel::Sms, "+1 (415) 555-1234", Ok("+14155551234")),
            (Channel::Sms, "4155551234", Err(())),
            (Channel::Email, " Ann@Example.COM ", Ok("ann@example.com")),
            (
                Channel::Email,
                "Ann <Ann@Example.com>",
                Ok("ann@example.com"),
            ),
            (Channel::Email, "nope", Err(())),
        ];
        for (c, a, want) in cases {
            assert_eq!(
                normalize(c, a).map_err(|_| ()),
                want.map(str::to_string),
                "{a}"
            );
        }
        assert_eq!(Channel::parse("E-mail"), Ok(Channel::Email));
        assert!(Channel::parse("fax").is_err());
    }
}

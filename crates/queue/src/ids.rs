//! The two strings a worker holds a job by: its id and its lease token. Newtypes, so
//! the one cannot be passed for the other, and the token is read in one place.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_string())
            }
        }

        impl From<$name> for String {
            fn from(s: $name) -> String {
                s.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl redis::ToRedisArgs for $name {
            fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
                self.0.write_redis_args(out)
            }
        }
    };
}

string_newtype!(
    /// A job's id: `job_` and a UUIDv7; an action job's adds `.` and its index.
    JobId
);

string_newtype!(
    /// A worker's hold on one attempt of a job, `worker:attempt` (`fetch.lua` and
    /// `fanout.lua` write the same). A finish or renewal applies only under the current
    /// one.
    LeaseToken
);

impl LeaseToken {
    pub fn new(worker: &str, attempt: u32) -> LeaseToken {
        LeaseToken(format!("{worker}:{attempt}"))
    }

    /// The attempt the token holds (a worker id may itself contain `:`).
    pub fn attempt(&self) -> Option<u32> {
        self.0.rsplit_once(':')?.1.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_attempt() {
        for (worker, attempt) in [("w1", 1), ("host-1:8080-42-ab", 7), ("", 0)] {
            let t = LeaseToken::new(worker, attempt);
            assert_eq!(t.as_str(), format!("{worker}:{attempt}"));
            assert_eq!(t.attempt(), Some(attempt));
        }
        for bad in ["", "w1", "w1:", "w1:x"] {
            assert_eq!(LeaseToken::from(bad).attempt(), None, "{bad}");
        }
    }
}

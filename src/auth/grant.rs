//! What a credential grants (API.md, Authentication and authorization):
//! scopes, and optionally the stream prefixes it reaches. Pure rules, no
//! HTTP and no store, so each is unit-tested here.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A scope a credential grants. `admin` implies the other two.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Reading events, snapshots and checkpoints, and following feeds.
    Read,
    /// Appending, and storing snapshots and checkpoints.
    Write,
    /// Keys, metrics and every other administration; implies the others.
    Admin,
}

impl Scope {
    /// The scope's name, as API.md spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    /// The scope of this name, if there is one.
    pub fn parse(name: &str) -> Option<Scope> {
        match name {
            "read" => Some(Scope::Read),
            "write" => Some(Scope::Write),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a credential may not do what a request asks: the text names what is
/// missing (API.md: "the problem names what was missing").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The credential lacks a scope.
    #[error("this credential lacks the `{0}` scope")]
    Scope(Scope),
    /// The credential's stream prefixes do not cover the name.
    #[error("this credential does not reach {what} {name:?}")]
    Reach {
        /// What was out of reach: "the stream", "the category"…
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// The read covers every stream, and the credential only some.
    #[error("this credential reaches only some streams; {0} needs all of them")]
    Restricted(&'static str),
}

/// What a caller may do: scopes, and the stream prefixes it reaches (`None`:
/// every stream), until when (`None`: as long as the credential stands).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    scopes: Vec<Scope>,
    streams: Option<Vec<String>>,
    expires: Option<DateTime<Utc>>,
}

impl Grant {
    /// Every scope over every stream: auth off, or the admin key.
    pub fn everything() -> Grant {
        Grant {
            scopes: vec![Scope::Admin],
            streams: None,
            expires: None,
        }
    }

    /// A grant of `scopes` over the streams starting with one of `streams`
    /// (`None`: every stream).
    pub fn new(scopes: Vec<Scope>, streams: Option<Vec<String>>) -> Grant {
        Grant {
            scopes,
            streams,
            expires: None,
        }
    }

    /// The same grant, ending at `at` (a key's `expires_at`, a JWT's `exp`).
    pub fn until(self, at: Option<DateTime<Utc>>) -> Grant {
        Grant {
            expires: at,
            ..self
        }
    }

    /// When the grant ends, if it does: a feed opened with it ends then.
    pub fn expires(&self) -> Option<DateTime<Utc>> {
        self.expires
    }

    /// Whether the grant still holds at `now`.
    pub fn holds_at(&self, now: DateTime<Utc>) -> bool {
        self.expires.is_none_or(|at| now < at)
    }

    /// Checks that the grant holds `scope` (`admin` holds them all).
    pub fn require(&self, scope: Scope) -> Result<(), Denied> {
        let held = self
            .scopes
            .iter()
            .any(|&held| held == scope || held == Scope::Admin);
        if held {
            Ok(())
        } else {
            Err(Denied::Scope(scope))
        }
    }

    /// Whether a stream (or a consumer, which follows the same rule) is in
    /// reach: its name starts with one of the prefixes.
    pub fn reaches(&self, name: &str) -> bool {
        self.streams
            .as_ref()
            .is_none_or(|prefixes| prefixes.iter().any(|p| name.starts_with(p.as_str())))
    }

    /// Checks `scope` and that the stream `name` is in reach.
    pub fn stream(&self, scope: Scope, name: &str) -> Result<(), Denied> {
        self.named(scope, "the stream", name)
    }

    /// Checks `scope` and that a consumer's checkpoint is in reach: a
    /// consumer name falls under the prefixes as a stream name does.
    pub fn consumer(&self, scope: Scope, name: &str) -> Result<(), Denied> {
        self.named(scope, "the consumer", name)
    }

    /// Checks `scope` and that a whole category is in reach: some prefix is
    /// a prefix of the category's name, so every stream of the category
    /// (`category-…`) starts with it.
    pub fn category(&self, scope: Scope, category: &str) -> Result<(), Denied> {
        self.require(scope)?;
        let reached = self
            .streams
            .as_ref()
            .is_none_or(|prefixes| prefixes.iter().any(|p| category.starts_with(p.as_str())));
        if reached {
            Ok(())
        } else {
            Err(Denied::Reach {
                what: "the category",
                name: category.to_owned(),
            })
        }
    }

    /// Checks `scope` and that the grant reaches every stream, as reads
    /// across the whole store (`what`) need.
    pub fn everywhere(&self, scope: Scope, what: &'static str) -> Result<(), Denied> {
        self.require(scope)?;
        match self.streams {
            None => Ok(()),
            Some(_) => Err(Denied::Restricted(what)),
        }
    }

    /// The name prefixes a listing of `prefix` may show, in byte order and
    /// none inside another, so that listing each in turn lists, in order,
    /// exactly the names both `prefix` and the grant reach.
    pub fn listable(&self, prefix: &str) -> Vec<String> {
        let Some(reach) = &self.streams else {
            return vec![prefix.to_owned()];
        };
        if reach.iter().any(|p| prefix.starts_with(p.as_str())) {
            return vec![prefix.to_owned()];
        }
        let mut within: Vec<String> = reach
            .iter()
            .filter(|p| p.starts_with(prefix))
            .cloned()
            .collect();
        within.sort();
        within.dedup();
        // After sorting, a prefix that holds another comes right before the
        // names it holds.
        let mut outermost: Vec<String> = Vec::with_capacity(within.len());
        for p in within {
            if outermost.last().is_none_or(|o| !p.starts_with(o.as_str())) {
                outermost.push(p);
            }
        }
        outermost
    }

    fn named(&self, scope: Scope, what: &'static str, name: &str) -> Result<(), Denied> {
        self.require(scope)?;
        if self.reaches(name) {
            Ok(())
        } else {
            Err(Denied::Reach {
                what,
                name: name.to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(scopes: &[Scope], streams: Option<&[&str]>) -> Grant {
        Grant::new(
            scopes.to_vec(),
            streams.map(|s| s.iter().map(|p| p.to_string()).collect()),
        )
    }

    #[test]
    fn admin_implies_read_and_write_and_nothing_implies_admin() {
        let admin = grant(&[Scope::Admin], None);
        assert!(admin.require(Scope::Read).is_ok());
        assert!(admin.require(Scope::Write).is_ok());
        let writer = grant(&[Scope::Write], None);
        assert_eq!(writer.require(Scope::Read), Err(Denied::Scope(Scope::Read)));
        assert_eq!(
            writer.require(Scope::Admin),
            Err(Denied::Scope(Scope::Admin))
        );
    }

    #[test]
    fn prefixes_reach_streams_categories_and_nothing_store_wide() {
        let g = grant(&[Scope::Read], Some(&["account", "order-"]));
        assert!(g.stream(Scope::Read, "account-1").is_ok());
        assert!(g.stream(Scope::Read, "order-9").is_ok());
        assert!(g.stream(Scope::Read, "orders-9").is_err());
        assert!(g.stream(Scope::Write, "account-1").is_err());
        assert!(g.category(Scope::Read, "account").is_ok());
        assert!(g.category(Scope::Read, "accounts").is_ok());
        // `order-` is no prefix of the category `order`: `orderx-1` would be
        // out of reach, so the category is.
        assert!(g.category(Scope::Read, "order").is_err());
        assert!(g.category(Scope::Read, "acc").is_err());
        assert!(g.everywhere(Scope::Read, "/all").is_err());
        assert!(
            grant(&[Scope::Read], None)
                .everywhere(Scope::Read, "/all")
                .is_ok()
        );
    }

    #[test]
    fn listings_cover_exactly_what_both_reach() {
        let g = grant(&[Scope::Read], Some(&["order-", "acc", "account", "b"]));
        assert_eq!(g.listable(""), ["acc", "b", "order-"]);
        assert_eq!(g.listable("account-7"), ["account-7"]);
        assert_eq!(g.listable("a"), ["acc"]);
        assert_eq!(g.listable("order"), ["order-"]);
        assert!(g.listable("z").is_empty());
        assert_eq!(grant(&[Scope::Read], None).listable("x"), ["x"]);
    }
}

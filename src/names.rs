//! The naming rules of API.md: stream, type and consumer names, categories,
//! cardinal ids and the consumer-group hash.

use md5::{Digest, Md5};
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Longest name, in bytes, of a stream, event type, consumer or correlation id.
pub const MAX_NAME_BYTES: usize = 255;

/// Why a name was refused; the text is shown to the client.
pub type NameError = String;

/// Checks a stream name (the same rule serves event types and consumer names):
/// 1–255 bytes of UTF-8 without whitespace, control characters, Unicode
/// format characters (bidirectional overrides and zero-width characters,
/// which make one name look like another in any UI or log), `/`, `?`, `#`;
/// not starting with `$`, and not `.` or `..` (path segments that URL
/// handling would resolve away).
pub fn check_name(what: &str, name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(format!("{what} must be 1 to {MAX_NAME_BYTES} bytes long"));
    }
    if name.starts_with('$') {
        return Err(format!("{what} may not start with `$` (reserved)"));
    }
    if name == "." || name == ".." {
        return Err(format!("{what} may not be `.` or `..`"));
    }
    if let Some(c) = name.chars().find(|&c| {
        c.is_whitespace()
            || c.is_control()
            || c.general_category() == GeneralCategory::Format
            || matches!(c, '/' | '?' | '#')
    }) {
        return Err(format!("{what} may not contain {}", c.escape_unicode()));
    }
    Ok(())
}

/// Most tags one event may carry.
pub const MAX_TAGS: usize = 32;

/// Checks an event's tags: at most [`MAX_TAGS`], each named like a stream,
/// none twice.
pub fn check_tags(tags: &[String]) -> Result<(), NameError> {
    if tags.len() > MAX_TAGS {
        return Err(format!(
            "an event carries at most {MAX_TAGS} tags, not {}",
            tags.len()
        ));
    }
    for (i, tag) in tags.iter().enumerate() {
        check_name("a tag", tag)?;
        if tags[..i].contains(tag) {
            return Err(format!("tag {tag:?} appears twice"));
        }
    }
    Ok(())
}

/// Checks a category name: a valid name that holds no `-`.
pub fn check_category(name: &str) -> Result<(), NameError> {
    check_name("a category", name)?;
    if name.contains('-') {
        return Err("a category holds no `-`".into());
    }
    Ok(())
}

/// Checks a correlation id: any string of 1–255 bytes without NUL (which
/// Postgres text cannot hold, so no store could keep it).
pub fn check_correlation_id(id: &str) -> Result<(), NameError> {
    if id.is_empty() || id.len() > MAX_NAME_BYTES {
        return Err(format!(
            "a correlation_id must be 1 to {MAX_NAME_BYTES} bytes long"
        ));
    }
    if id.contains('\0') {
        return Err("a correlation_id may not contain NUL".into());
    }
    Ok(())
}

/// Checks part of a stream name used to search (`prefix`, `after`): no
/// longer than a name, and without characters no name holds.
pub fn check_name_part(what: &str, part: &str) -> Result<(), NameError> {
    if part.len() > MAX_NAME_BYTES {
        return Err(format!(
            "{what} is longer than any name ({MAX_NAME_BYTES} bytes)"
        ));
    }
    if part.chars().any(char::is_control) {
        return Err(format!(
            "{what} holds a control character, which no name does"
        ));
    }
    Ok(())
}

/// The category of a stream: the part of its name before the first `-`.
pub fn category(stream: &str) -> &str {
    stream
        .split_once('-')
        .map_or(stream, |(category, _)| category)
}

/// The cardinal id of a stream: its id (after the first `-`) up to the first
/// `+`; a stream with no id is its own cardinal id.
pub fn cardinal_id(stream: &str) -> &str {
    match stream.split_once('-') {
        Some((_, id)) => id.split_once('+').map_or(id, |(cardinal, _)| cardinal),
        None => stream,
    }
}

/// Message DB's consumer-group hash of a stream: the first 16 hex digits of the
/// MD5 of its cardinal id, read as a signed 64-bit integer. A stream belongs to
/// member `|hash| mod size`; stores compute that as `abs(hash % size)`, which is
/// the same number and cannot overflow.
pub fn cardinal_hash(stream: &str) -> i64 {
    let digest = Md5::digest(cardinal_id(stream).as_bytes());
    let first8: [u8; 8] = digest[..8].try_into().expect("an MD5 digest has 16 bytes");
    i64::from_be_bytes(first8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_and_cardinal_ids() {
        assert_eq!(category("account-123"), "account");
        assert_eq!(category("account:command-9"), "account:command");
        assert_eq!(category("account"), "account");
        assert_eq!(cardinal_id("account-123+eu"), "123");
        assert_eq!(cardinal_id("account-123-x"), "123-x");
        assert_eq!(cardinal_id("account"), "account");
    }

    #[test]
    fn hash_matches_message_db() {
        // md5("123") = 202cb962ac59075b964b07152d234b70
        assert_eq!(cardinal_hash("account-123"), 0x202cb962ac59075b_i64);
        // md5("abc") = 900150983cd24fb0…: the top bit is set, so it is negative.
        assert_eq!(cardinal_hash("x-abc"), 0x900150983cd24fb0_u64 as i64);
        assert!(cardinal_hash("x-abc") < 0);
        assert_eq!(cardinal_hash("x-5"), cardinal_hash("y-5+eu"));
    }

    #[test]
    fn name_rules() {
        assert!(check_name("a stream", "account-1").is_ok());
        assert!(check_name("a stream", "ü-ß").is_ok());
        for bad in ["", "$all", "a b", "a\tb", "a/b", "a?b", "a#b", "a\u{7f}"] {
            assert!(check_name("a stream", bad).is_err(), "{bad:?}");
        }
        assert!(check_name("a stream", &"x".repeat(256)).is_err());
        assert!(check_category("account").is_ok());
        assert!(check_category("account-1").is_err());
    }
}

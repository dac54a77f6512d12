//! Words from a request echoed back in an error answer ([`Echo`]): quoted like `{:?}`
//! and cut to [`MAX_ECHO_CHARS`], so that a 64 KiB path segment or input name costs the
//! answer a few dozen bytes and an attacker learns nothing from what is reflected.

use std::fmt;

/// Longest echo, in characters (a valid name is at most 63).
pub const MAX_ECHO_CHARS: usize = 64;

/// `{:?}` of a client-supplied string, cut to [`MAX_ECHO_CHARS`] characters (then `…`).
#[derive(Clone, Copy)]
pub struct Echo<'a>(pub &'a str);

impl fmt::Display for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(MAX_ECHO_CHARS) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}…", &self.0[..cut]),
        }
    }
}

impl fmt::Debug for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// An owned, already-bounded echo (for error types that keep the text).
pub fn echo(s: &str) -> String {
    Echo(s).to_string()
}

/// A library's error message about a client's input, cut to `max` bytes (at a character
/// boundary, then `…`): serde's messages quote the offending value whole.
pub fn bounded(message: &str, max: usize) -> String {
    if message.len() <= max {
        return message.to_owned();
    }
    let mut cut = max;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &message[..cut])
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn short_names_are_quoted_whole() {
        assert_eq!(Echo("risk").to_string(), "\"risk\"");
        assert_eq!(Echo("a\"b\n").to_string(), r#""a\"b\n""#);
        assert_eq!(echo(&"x".repeat(64)), format!("{:?}", "x".repeat(64)));
    }

    #[test]
    fn long_names_are_cut() {
        let long = "é".repeat(70_000);
        let shown = Echo(&long).to_string();
        assert!(shown.ends_with("\"…"), "{shown}");
        assert_eq!(shown.chars().filter(|&c| c == 'é').count(), MAX_ECHO_CHARS);
        assert_eq!(bounded("abcdef", 3), "abc…");
        assert_eq!(bounded("ab", 3), "ab");
        assert_eq!(bounded("aé", 2), "a…");
    }

    proptest! {
        #[test]
        fn echoes_are_bounded(s in ".{0,300}", max in 0usize..100) {
            // Each character escapes to at most 10 bytes (`\u{10ffff}`).
            prop_assert!(Echo(&s).to_string().len() <= 2 + 3 + 10 * MAX_ECHO_CHARS);
            prop_assert!(bounded(&s, max).len() <= max + 3);
        }
    }
}

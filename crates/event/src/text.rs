//! A small-string type for event fields.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;

/// An immutable string that stores up to 24 bytes inline.
///
/// Most event fields (user names, ids, ASN organisations, country codes) are short; keeping them
/// inline saves one heap allocation per field on the hot path. Serialized as a plain JSON string.
///
/// The accessors are `#[inline]`: they run several times per event in other crates (rule
/// predicates, profile lookups), and the release build has no cross-crate LTO to inline them.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Text(CompactString);

impl Text {
    /// A new text from anything string-like.
    pub fn new(s: impl AsRef<str>) -> Self {
        Text(CompactString::new(s.as_ref()))
    }

    /// A text that refers to `s` instead of copying it: cloning it copies a pointer and dropping
    /// it frees nothing, however long `s` is. For strings the program keeps for good anyway,
    /// such as the enricher's interned database names.
    ///
    /// ```
    /// use authwatch_event::Text;
    /// static ORG: &str = "China Unicom Beijing Province Network";
    /// let org = Text::from_static(ORG);
    /// assert_eq!(org.clone().as_str().as_ptr(), ORG.as_ptr());
    /// ```
    #[inline]
    pub const fn from_static(s: &'static str) -> Self {
        Text(CompactString::const_new(s))
    }

    /// `s` with its ASCII letters in lower case: one copy, as [`Text::new`] makes (for logins,
    /// which identity providers compare without case).
    ///
    /// ```
    /// use authwatch_event::Text;
    /// assert_eq!(Text::ascii_lowercase("Ken@Example.JP"), "ken@example.jp");
    /// ```
    pub fn ascii_lowercase(s: &str) -> Self {
        let mut text = CompactString::new(s);
        text.make_ascii_lowercase();
        Text(text)
    }

    /// Whether the text is empty (for `skip_serializing_if`).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The text as a `&str`.
    #[inline]
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl Deref for Text {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.0.as_str()
    }
}

// `Text` hashes and compares as its `str` (CompactString hashes `as_str()`), so maps keyed by
// `Text` can be searched with a borrowed `&str`, without building a key per lookup.
impl std::borrow::Borrow<str> for Text {
    #[inline]
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}

impl AsRef<str> for Text {
    #[inline]
    fn as_ref(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Text::new(s)
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Text(CompactString::from(s))
    }
}

impl PartialEq<str> for Text {
    #[inline]
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    #[inline]
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl schemars::JsonSchema for Text {
    fn schema_name() -> Cow<'static, str> {
        "String".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        String::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::Text;
    use std::collections::HashMap;
    use std::hash::{BuildHasher, RandomState};

    #[test]
    fn borrowed_str_finds_inline_and_heap_keys() {
        let short = "aiko@example.co.jp";
        let long = "a.much.longer.user.name@subsidiary.example.co.jp";
        let mut map: HashMap<Text, u32> = HashMap::new();
        map.insert(Text::new(short), 1);
        map.insert(Text::new(long), 2);
        assert_eq!(map.get(short), Some(&1));
        assert_eq!(map.get(long), Some(&2));
        assert_eq!(map.get("aiko"), None);
        // `Borrow` requires equal hashes for equal values.
        let s = RandomState::new();
        for k in [short, long, ""] {
            assert_eq!(s.hash_one(Text::new(k)), s.hash_one(k));
        }
    }
}

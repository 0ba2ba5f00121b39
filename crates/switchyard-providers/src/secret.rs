//! API keys: read from the environment variable or file a deployment names, held
//! as a `SecretString`, exposed only to build the auth header, and scrubbed from any
//! text (provider messages can echo what they were sent).

use std::path::Path;

use secrecy::{ExposeSecret, SecretString};

/// A provider API key. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct ApiKey(SecretString);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl ApiKey {
    /// Wraps a key value.
    pub fn new(value: String) -> Self {
        Self(SecretString::from(value))
    }

    /// Reads the key from an environment variable.
    pub fn from_env(var: &str) -> Result<Self, String> {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(Self::new(v.trim().to_owned())),
            Ok(_) => Err(format!("environment variable {var} is empty")),
            Err(_) => Err(format!("environment variable {var} is not set")),
        }
    }

    /// Reads the key from a file (first line, trimmed), as mounted secrets are.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
        let value = text.lines().next().unwrap_or("").trim();
        if value.is_empty() {
            return Err(format!("key file {} is empty", path.display()));
        }
        Ok(Self::new(value.to_owned()))
    }

    /// The value, for the one place that needs it: the auth header.
    pub(crate) fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

/// Replaces every occurrence of the key in `text` by `***`, and masked echoes
/// of it too (OpenAI answers an invalid key with its first and last characters
/// around a run of `*`, as in `sk-live****************5b4a`).
pub fn redact(text: &str, key: Option<&ApiKey>) -> String {
    let Some(k) = key.map(ApiKey::expose).filter(|k| k.len() >= 4) else {
        return text.to_owned();
    };
    let text = if text.contains(k) {
        text.replace(k, "***")
    } else {
        text.to_owned()
    };
    if !text.contains("****") {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let start = rest
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(rest.len());
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let word = &rest[..end];
        let bare = word.trim_end_matches(['.', ',', ';', ':', '"', '\'', ')']);
        if is_masked_echo(bare, k) {
            out.push_str("***");
            out.push_str(&word[bare.len()..]);
        } else {
            out.push_str(word);
        }
        rest = &rest[end..];
    }
    out
}

/// Whether `word` is `key` with its middle starred out.
fn is_masked_echo(word: &str, key: &str) -> bool {
    let Some(stars) = word.find("****") else {
        return false;
    };
    let head = &word[..stars];
    let tail = word[stars..].trim_start_matches('*');
    head.len() + tail.len() >= 4 && key.starts_with(head) && key.ends_with(tail)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_show_in_debug_or_redacted_text() {
        let k = ApiKey::new("sk-live-abcdef123456".into());
        assert_eq!(format!("{k:?}"), "ApiKey(***)");
        assert_eq!(
            redact(
                "Incorrect API key provided: sk-live-abcdef123456.",
                Some(&k)
            ),
            "Incorrect API key provided: ***."
        );
    }

    #[test]
    fn masked_echoes_of_the_key_are_scrubbed_too() {
        let k = ApiKey::new("sk-live-abcdef1234565b4a".into());
        assert_eq!(
            redact(
                "Incorrect API key provided: sk-live****************5b4a. You can find your API key at https://platform.openai.com/account/api-keys.",
                Some(&k)
            ),
            "Incorrect API key provided: ***. You can find your API key at https://platform.openai.com/account/api-keys."
        );
        // Stars that are not this key stay.
        let text = "Incorrect API key provided: sk-test****************0000.";
        assert_eq!(redact(text, Some(&k)), text);
        assert_eq!(
            redact("rated ***** by users", Some(&k)),
            "rated ***** by users"
        );
    }

    #[test]
    fn key_files_are_read_trimmed_and_never_echoed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let key = "sk-file-Zq81mN0pL4kT7vWx";
        for (name, text) in [
            ("newline", format!("{key}\n")),
            ("crlf", format!("{key}\r\n")),
            ("spaces", format!("  {key}  \n\n# rotated 2026-11\n")),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            let k = ApiKey::from_file(&path).unwrap();
            assert_eq!(k.expose(), key, "{name}");
            assert!(!format!("{k:?}").contains(key));
        }
        let empty = dir.join("empty");
        std::fs::write(&empty, "\n   \n").unwrap();
        let e = ApiKey::from_file(&empty).unwrap_err();
        assert!(
            e.contains(&empty.display().to_string()) && e.contains("empty"),
            "{e}"
        );
        let missing = dir.join("missing");
        let e = ApiKey::from_file(&missing).unwrap_err();
        assert!(
            e.contains(&missing.display().to_string()) && e.contains("cannot read key file"),
            "{e}"
        );
    }

    #[test]
    fn missing_keys_name_the_source() {
        assert!(
            ApiKey::from_env("SWITCHYARD_TEST_SURELY_UNSET_KEY")
                .unwrap_err()
                .contains("SWITCHYARD_TEST_SURELY_UNSET_KEY")
        );
        assert!(
            ApiKey::from_file(Path::new("/nonexistent/key"))
                .unwrap_err()
                .contains("/nonexistent/key")
        );
    }
}

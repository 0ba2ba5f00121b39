//! Command-line changes to the simulator config (`--set MODEL.KEY=VALUE`,
//! `--outage MODEL=START..END[:STATUS]`), applied to its TOML table as if
//! written in the file.

use switchyard_core::config::source::KeyPath;

use super::ModelBehaviour;

/// One command-line change to the config: `MODEL.KEY=VALUE` (`--set`), or an
/// outage appended to a model (`--outage MODEL=START..END[:STATUS]`). `MODEL` is
/// the id requests carry (`gpt-5.4-mini`; dots are fine, the key is what follows
/// the last one), or `default` for the `[default]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// The model, or `None` for `[default]`.
    pub model: Option<String>,
    /// A [`ModelBehaviour`] key.
    pub key: String,
    /// Its new value.
    pub value: toml::Value,
    /// Whether the value (an array) adds to the current one instead of replacing it.
    pub append: bool,
}

impl Setting {
    /// Parses `MODEL.KEY=VALUE`. The value is TOML (`0.2`, `"2s"`, `["stop"]`,
    /// `[{start = "1m", duration = "30s"}]`); text that is not TOML is taken as a
    /// string, so `ttft=300ms` works unquoted. The key and value are checked here,
    /// so a typo is reported with the flag that holds it.
    pub fn parse_set(text: &str) -> Result<Self, String> {
        let (target, value) = text.split_once('=').ok_or_else(|| {
            format!("`{text}` is not MODEL.KEY=VALUE (for example gpt-5-nano.error_rate=0.2)")
        })?;
        let (model, key) = target.trim().rsplit_once('.').ok_or_else(|| {
            format!(
                "`{target}` names no key: write MODEL.KEY, such as gpt-5-nano.error_rate or default.ttft"
            )
        })?;
        if model.is_empty() || key.is_empty() {
            return Err(format!(
                "`{target}` needs a model (or `default`) and a key, such as gpt-5-nano.error_rate"
            ));
        }
        let value = parse_value(value.trim());
        let setting = Setting {
            model: (model != "default").then(|| model.to_owned()),
            key: key.to_owned(),
            value,
            append: false,
        };
        setting.check()?;
        Ok(setting)
    }

    /// Parses `MODEL=START..END[:STATUS]` (humantime durations after server start,
    /// scaled like the file's outages; status 503 unless given).
    pub fn parse_outage(text: &str) -> Result<Self, String> {
        let usage = "write MODEL=START..END or MODEL=START..END:STATUS, such as claude-haiku-5-5=2m..3m:529";
        let (model, span) = text
            .split_once('=')
            .ok_or_else(|| format!("`{text}` is not an outage: {usage}"))?;
        let (span, status) = match span.rsplit_once(':') {
            Some((span, status)) => {
                let status: u16 = status.trim().parse().map_err(|_| {
                    format!("`{status}` is not an HTTP status in `{text}`: {usage}")
                })?;
                (span, status)
            }
            None => (span, 503),
        };
        let (start, end) = span
            .split_once("..")
            .ok_or_else(|| format!("`{span}` is not START..END in `{text}`: {usage}"))?;
        let duration = |d: &str| {
            humantime::parse_duration(d.trim()).map_err(|e| {
                format!(
                    "`{}` is not a duration in `{text}` ({e}): {usage}",
                    d.trim()
                )
            })
        };
        let (start, end) = (duration(start)?, duration(end)?);
        if end <= start {
            return Err(format!(
                "the outage in `{text}` ends before it starts: END must come after START"
            ));
        }
        if model.trim().is_empty() {
            return Err(format!("`{text}` names no model: {usage}"));
        }
        let mut outage = toml::Table::new();
        outage.insert(
            "start".into(),
            humantime::format_duration(start).to_string().into(),
        );
        outage.insert(
            "duration".into(),
            humantime::format_duration(end - start).to_string().into(),
        );
        outage.insert("status".into(), i64::from(status).into());
        let model = model.trim();
        let setting = Setting {
            model: (model != "default").then(|| model.to_owned()),
            key: "outages".into(),
            value: toml::Value::Array(vec![outage.into()]),
            append: true,
        };
        setting.check()?;
        Ok(setting)
    }

    /// Checks the key and value alone, on top of the built-in defaults.
    fn check(&self) -> Result<(), String> {
        let mut t = toml::Table::new();
        t.insert(self.key.clone(), self.value.clone());
        let flag = |problem: &str| {
            format!(
                "{}.{} = {}: {problem}",
                self.model.as_deref().unwrap_or("default"),
                self.key,
                self.value
            )
        };
        let behaviour: ModelBehaviour = toml::Value::Table(t)
            .try_into()
            .map_err(|e: toml::de::Error| flag(e.message()))?;
        behaviour
            .validate(&KeyPath::root().key(&self.key))
            .map_err(|e| flag(&format!("{}; {}", e.problem, e.fix)))
    }
}

impl std::str::FromStr for Setting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_set(s)
    }
}

/// A TOML value, or the text as a string when it is not one.
fn parse_value(text: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_owned()))
}

/// Writes the settings into a config table, in order: later ones win, and
/// `--outage` adds to the outages the model has (its own, else `[default]`'s).
pub(super) fn apply_settings(table: &mut toml::Table, settings: &[Setting]) {
    fn child<'t>(table: &'t mut toml::Table, key: &str) -> &'t mut toml::Table {
        let entry = table
            .entry(key.to_owned())
            .or_insert_with(|| toml::Table::new().into());
        if !entry.is_table() {
            *entry = toml::Table::new().into();
        }
        match entry {
            toml::Value::Table(t) => t,
            _ => unreachable!("replaced by a table above"),
        }
    }
    for s in settings {
        let inherited = child(table, "default").get(&s.key).cloned();
        let target = match &s.model {
            None => child(table, "default"),
            Some(model) => child(child(table, "models"), model),
        };
        let value = match (&s.value, s.append) {
            (toml::Value::Array(added), true) => {
                let mut all = target
                    .get(&s.key)
                    .or(inherited.as_ref())
                    .and_then(toml::Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                all.extend(added.iter().cloned());
                toml::Value::Array(all)
            }
            (v, _) => v.clone(),
        };
        target.insert(s.key.clone(), value);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn settings_name_a_model_and_a_key() {
        let s = Setting::parse_set("gpt-5.4-mini.error_rate=0.2").unwrap();
        assert_eq!(
            (s.model.as_deref(), s.key.as_str(), s.value.as_float()),
            (Some("gpt-5.4-mini"), "error_rate", Some(0.2))
        );
        let s = Setting::parse_set("default.ttft=300ms").unwrap();
        assert_eq!((s.model, s.value.as_str()), (None, Some("300ms")));
        let s = Setting::parse_set("m.unsupported_params=[\"stop\"]").unwrap();
        assert!(s.value.is_array());
        let s = Setting::parse_set("m.rate_limit_hint=none").unwrap();
        assert_eq!(s.value.as_str(), Some("none"));
        let s = Setting::parse_outage("claude-haiku-5-5=2m..3m30s:529").unwrap();
        assert_eq!((s.key.as_str(), s.append), ("outages", true));
        let err = |text: &str| Setting::parse_set(text).unwrap_err();
        assert!(err("gpt-5-nano.error_rat=0.2").contains("unknown field `error_rat`"));
        let e = err("gpt-5-nano.error_rate=1.5");
        assert!(
            e.contains("gpt-5-nano.error_rate = 1.5") && e.contains("not a fraction"),
            "{e}"
        );
        assert!(err("m.ttft=soon").contains("m.ttft"));
        assert!(err("m.rpm=many").contains("m.rpm"));
        assert!(err("m.rate_limit_hint=sometimes").contains("unknown variant"));
        assert!(err("gpt-5-nano").contains("MODEL.KEY=VALUE"));
        assert!(err("error_rate=0.1").contains("names no key"));
        let oerr = |text: &str| Setting::parse_outage(text).unwrap_err();
        assert!(oerr("m=3m..2m").contains("ends before it starts"));
        assert!(oerr("m=1m-2m").contains("START..END"));
        assert!(oerr("m=1m..2m:abc").contains("HTTP status"));
        assert!(oerr("m=1m..2m:200").contains("not an error status"));
        assert!(oerr("m=soon..2m").contains("not a duration"));
    }
}

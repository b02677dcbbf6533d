//! Owns the checks of single values every table of the file shares: HTTP
//! methods, URLs, strings with `${VAR}` from the environment, durations,
//! counts in a range, and `{field}` templates.

use std::time::Duration;

use jiff::SignedDuration;
use reqwest::Method;
use serde_spanned::Spanned;
use url::Url;

use super::Validator;
use super::spec::{Template, TemplatePart};
use crate::record::FieldPath;

impl Validator<'_> {
    pub(crate) fn method(
        &mut self,
        raw: Option<&Spanned<String>>,
        default: Method,
        key: &str,
    ) -> Option<Method> {
        let Some(raw) = raw else {
            return Some(default);
        };
        match raw.get_ref().to_ascii_uppercase().as_str() {
            "PUT" => Some(Method::PUT),
            "PATCH" => Some(Method::PATCH),
            "POST" => Some(Method::POST),
            _ => {
                self.problem(raw, key, "expected \"PUT\", \"PATCH\" or \"POST\"");
                None
            }
        }
    }

    pub(crate) fn url(&mut self, raw: &Spanned<String>, key: &str) -> Option<Url> {
        let text = self.string(raw, key)?;
        match Url::parse(&text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                Some(url)
            }
            _ => {
                self.problem(
                    raw,
                    key,
                    "expected an absolute http(s) URL, like \"https://api.example.com\"",
                );
                None
            }
        }
    }

    /// The value with `${VAR}` replaced from the environment.
    pub(crate) fn string(&mut self, raw: &Spanned<String>, key: &str) -> Option<String> {
        match interpolate(raw.get_ref(), self.env) {
            Ok(value) => Some(value),
            Err(message) => {
                self.problem(raw, key, message);
                None
            }
        }
    }

    /// A duration that may be given in days ("30d"), a day counted as 24 hours.
    /// Zero is allowed: keep none.
    pub(crate) fn long_duration(&mut self, raw: &Spanned<String>, key: &str) -> Option<Duration> {
        let parsed = parse_long_duration(raw.get_ref());
        if parsed.is_none() {
            self.problem(
                raw,
                key,
                "expected a duration like \"30d\", \"12h\" or \"2w\" (\"0s\" keeps none)",
            );
        }
        parsed
    }

    pub(crate) fn duration(&mut self, raw: &Spanned<String>, key: &str) -> Option<Duration> {
        let parsed = raw
            .get_ref()
            .parse::<SignedDuration>()
            .ok()
            .and_then(|d| Duration::try_from(d).ok());
        if parsed.is_none() {
            self.problem(
                raw,
                key,
                "expected a duration like \"500ms\", \"30s\", \"5m\" or \"1h\"",
            );
        }
        parsed
    }

    pub(crate) fn duration_or(
        &mut self,
        raw: Option<&Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Option<Duration> {
        match raw {
            None => Some(default),
            Some(raw) => self.duration(raw, key),
        }
    }

    pub(crate) fn count(
        &mut self,
        raw: &Spanned<i64>,
        key: &str,
        min: u32,
        max: u32,
    ) -> Option<u32> {
        let n = *raw.get_ref();
        if n < i64::from(min) || n > i64::from(max) {
            self.problem(
                raw,
                key,
                format!("expected a whole number from {min} to {max}"),
            );
            return None;
        }
        u32::try_from(n).ok()
    }
}

/// A duration in any unit up to days or weeks, a day counted as 24 hours:
/// the config's periods and retentions, and the command line's windows.
pub fn parse_long_duration(text: &str) -> Option<Duration> {
    text.parse::<jiff::Span>()
        .ok()
        .and_then(|span| {
            span.to_duration(jiff::SpanRelativeTo::days_are_24_hours())
                .ok()
        })
        .and_then(|d| Duration::try_from(d).ok())
}

pub(crate) fn path_or(raw: Option<&Spanned<String>>, default: &str) -> FieldPath {
    FieldPath::parse(raw.map_or(default, |p| p.get_ref().as_str()))
}

pub(super) fn string_or(raw: Option<&Spanned<String>>, default: &str) -> String {
    raw.map_or_else(|| default.to_owned(), |p| p.get_ref().clone())
}

/// Replaces `${NAME}` with the environment variable's value; `$$` is a literal `$`.
/// Errors name the variable, never a value.
pub fn interpolate(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let Some(end) = tail.find('}') else {
                return Err("unterminated ${ — expected ${NAME}".to_owned());
            };
            let name = &tail[..end];
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!("invalid variable name in ${{{name}}}"));
            }
            match env(name) {
                Some(value) => out.push_str(&value),
                None => return Err(format!("environment variable {name} is not set")),
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses `"inv-{id}"` into literal and field parts.
pub fn parse_template(text: &str) -> Result<Template, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(TemplatePart::Literal(rest[..open].to_owned()));
        }
        let Some(close) = rest[open..].find('}') else {
            return Err("unterminated { in template".to_owned());
        };
        let inside = &rest[open + 1..open + close];
        let (field, filter) = match inside.split_once('|') {
            Some((field, filter)) => (field, Some(filter)),
            None => (inside, None),
        };
        if field.is_empty() || field.split('.').any(str::is_empty) {
            return Err(format!("{{{inside}}} is not a field path"));
        }
        let path = FieldPath::parse(field);
        parts.push(match filter {
            None => TemplatePart::Field(path),
            Some("lower") => TemplatePart::LowerField(path),
            Some(other) => {
                return Err(format!(
                    "{{{inside}}}: unknown filter `{other}` (the one filter is `|lower`)"
                ));
            }
        });
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        parts.push(TemplatePart::Literal(rest.to_owned()));
    }
    Ok(Template { parts })
}

//! Checks a sync's `[mapping]` and `[destination]`: how a record becomes a
//! destination object, where it is written and in which write mode.

use std::path::Path;
use std::str::FromStr;

use reqwest::Method;
use reqwest::header::HeaderName;
use serde_spanned::Spanned;

use super::raw::*;
use super::*;
use crate::record::FieldPath;

impl Validator<'_> {
    pub(super) fn mapping(
        &mut self,
        raw: Option<Spanned<RawMapping>>,
        source: Option<&SourceSpec>,
        at: &str,
    ) -> Option<MappingSpec> {
        let at = format!("{at}.mapping");
        let raw = raw.map(Spanned::into_inner).unwrap_or_default();
        let default_id = source.map_or_else(|| "id".to_owned(), |s| s.id_field.to_string());
        let external_id = match raw.external_id.as_ref() {
            None => parse_template(&format!("{{{default_id}}}")).ok(),
            Some(t) => match parse_template(t.get_ref()) {
                Ok(template)
                    if template
                        .parts
                        .iter()
                        .any(|p| matches!(p, TemplatePart::Field(_))) =>
                {
                    Some(template)
                }
                Ok(_) => {
                    self.problem(
                        t,
                        format!("{at}.external_id"),
                        "expected a template naming at least one source field, like \"inv-{id}\"",
                    );
                    None
                }
                Err(message) => {
                    self.problem(t, format!("{at}.external_id"), message);
                    None
                }
            },
        };
        let mut fields = Vec::new();
        for (out, src) in &raw.fields {
            if out.is_empty() || src.get_ref().is_empty() || out.split('.').any(str::is_empty) {
                self.problem(
                    src,
                    format!("{at}.fields.{out}"),
                    "expected a dotted field path",
                );
                continue;
            }
            fields.push((FieldPath::parse(out), FieldPath::parse(src.get_ref())));
        }
        let mut constants = Vec::new();
        for (out, value) in &raw.constants {
            if let Some(message) = not_json(value.get_ref()) {
                self.problem(value, format!("{at}.constants.{out}"), message);
                continue;
            }
            match serde_json::to_value(value.get_ref()) {
                Ok(v) => constants.push((FieldPath::parse(out), v)),
                Err(_) => self.problem(
                    value,
                    format!("{at}.constants.{out}"),
                    "expected a JSON-compatible value",
                ),
            }
        }
        let mut required = Vec::new();
        for (out, kind) in &raw.required {
            let json_type = match kind.get_ref().as_str() {
                "string" => JsonType::String,
                "integer" => JsonType::Integer,
                "number" => JsonType::Number,
                "boolean" => JsonType::Boolean,
                "object" => JsonType::Object,
                "array" => JsonType::Array,
                _ => {
                    self.problem(
                        kind,
                        format!("{at}.required.{out}"),
                        "expected one of \"string\", \"integer\", \"number\", \"boolean\", \"object\", \"array\"",
                    );
                    continue;
                }
            };
            required.push((FieldPath::parse(out), json_type));
        }
        Some(MappingSpec {
            external_id: external_id?,
            fields,
            constants,
            required,
        })
    }

    pub(super) fn destination(
        &mut self,
        raw: Spanned<RawDestination>,
        base_dir: &Path,
        at: &str,
    ) -> Option<DestinationSpec> {
        let at = format!("{at}.destination");
        let r = raw.get_ref();
        let http_only: [(&str, Option<std::ops::Range<usize>>); 21] = [
            ("base_url", r.base_url.as_ref().map(Spanned::span)),
            ("mode", r.mode.as_ref().map(Spanned::span)),
            ("auth", r.auth.as_ref().map(Spanned::span)),
            ("timeout", r.timeout.as_ref().map(Spanned::span)),
            ("rate_limit", r.rate_limit.as_ref().map(Spanned::span)),
            ("error_path", r.error_path.as_ref().map(Spanned::span)),
            ("concurrency", r.concurrency.as_ref().map(Spanned::span)),
            ("dest_id_field", r.dest_id_field.as_ref().map(Spanned::span)),
            ("path", r.path.as_ref().map(Spanned::span)),
            ("method", r.method.as_ref().map(Spanned::span)),
            (
                "idempotency_header",
                r.idempotency_header.as_ref().map(Spanned::span),
            ),
            ("lookup_path", r.lookup_path.as_ref().map(Spanned::span)),
            ("lookup_param", r.lookup_param.as_ref().map(Spanned::span)),
            (
                "lookup_results_path",
                r.lookup_results_path.as_ref().map(Spanned::span),
            ),
            ("create_path", r.create_path.as_ref().map(Spanned::span)),
            ("update_path", r.update_path.as_ref().map(Spanned::span)),
            ("update_method", r.update_method.as_ref().map(Spanned::span)),
            (
                "version_header",
                r.version_header.as_ref().map(Spanned::span),
            ),
            (
                "late_write_window",
                r.late_write_window.as_ref().map(Spanned::span),
            ),
            ("read_path", r.read_path.as_ref().map(Spanned::span)),
            (
                "read_results_path",
                r.read_results_path.as_ref().map(Spanned::span),
            ),
        ];
        match r.kind.get_ref().as_str() {
            "jsonl" => {
                let mut ok = true;
                for (key, span) in http_only.iter().cloned() {
                    if let Some(span) = span {
                        self.problem(
                            &Spanned::new(span, ()),
                            format!("{at}.{key}"),
                            "does not apply to type = \"jsonl\"",
                        );
                        ok = false;
                    }
                }
                if !r.headers.is_empty() {
                    self.problem(
                        &raw,
                        format!("{at}.headers"),
                        "does not apply to type = \"jsonl\"",
                    );
                    ok = false;
                }
                let Some(file) = r.file.as_ref() else {
                    self.problem(&raw, at, "type = \"jsonl\" needs `file`");
                    return None;
                };
                let file = self.string(file, &format!("{at}.file"))?;
                ok.then(|| {
                    DestinationSpec::JsonLines(JsonLinesSpec {
                        path: base_dir.join(file),
                        external_id_field: r
                            .external_id_field
                            .as_ref()
                            .map_or_else(|| "external_id".to_owned(), |f| f.get_ref().clone()),
                    })
                })
            }
            "http" => self.http_destination(&raw, http_only, &at),
            _ => {
                self.problem(
                    &r.kind,
                    format!("{at}.type"),
                    "expected \"http\" or \"jsonl\"",
                );
                None
            }
        }
    }

    fn http_destination(
        &mut self,
        raw: &Spanned<RawDestination>,
        keys: [(&str, Option<std::ops::Range<usize>>); 21],
        at: &str,
    ) -> Option<DestinationSpec> {
        let r = raw.get_ref();
        if let Some(file) = &r.file {
            self.problem(
                file,
                format!("{at}.file"),
                "does not apply to type = \"http\"",
            );
            return None;
        }
        let Some(base_url) = r.base_url.as_ref() else {
            self.problem(raw, at, "type = \"http\" needs `base_url`");
            return None;
        };
        let Some(mode) = r.mode.as_ref() else {
            self.problem(
                raw,
                at,
                "type = \"http\" needs `mode` (\"put\", \"lookup\" or \"post\")",
            );
            return None;
        };
        let mode_name = mode.get_ref().as_str();
        let mode_keys: &[&str] = match mode_name {
            "put" => &["path", "method", "read_path", "read_results_path"],
            "post" => &[
                "path",
                "idempotency_header",
                "read_path",
                "read_results_path",
            ],
            "lookup" => &[
                "lookup_path",
                "lookup_param",
                "lookup_results_path",
                "create_path",
                "update_path",
                "update_method",
            ],
            _ => {
                self.problem(
                    mode,
                    format!("{at}.mode"),
                    "expected \"put\", \"lookup\" or \"post\"",
                );
                return None;
            }
        };
        let mode_specific = [
            "path",
            "method",
            "idempotency_header",
            "read_path",
            "read_results_path",
            "lookup_path",
            "lookup_param",
            "lookup_results_path",
            "create_path",
            "update_path",
            "update_method",
        ];
        let mut ok = true;
        for (key, span) in keys {
            if let Some(span) = span
                && mode_specific.contains(&key)
                && !mode_keys.contains(&key)
            {
                self.problem(
                    &Spanned::new(span, ()),
                    format!("{at}.{key}"),
                    format!(
                        "does not apply to mode = {mode_name:?} (it takes: {})",
                        mode_keys.join(", ")
                    ),
                );
                ok = false;
            }
        }
        let http = self.http(
            base_url,
            &r.headers,
            r.auth.as_ref(),
            r.timeout.as_ref(),
            r.rate_limit.as_ref(),
            r.error_path.as_ref(),
            at,
        );
        let concurrency = match r.concurrency.as_ref() {
            None => Some(8),
            Some(n) => self
                .count(n, &format!("{at}.concurrency"), 1, 256)
                .map(|n| n as usize),
        };
        let mode = self.write_mode(raw, mode_name, at);
        // A create whose outcome is unknown is resolved by looking the record up
        // again, and a POST's answer is matched by it: both need the field.
        if r.external_id_field.is_none() && matches!(mode_name, "lookup" | "post") {
            self.problem(
                raw,
                at,
                format!(
                    "mode = {mode_name:?} needs `external_id_field` (the field of a destination object that holds the external id)"
                ),
            );
            ok = false;
        }
        let version_header = r.version_header.as_ref().and_then(|h| {
            let parsed = HeaderName::from_str(h.get_ref()).ok();
            if parsed.is_none() {
                self.problem(
                    h,
                    format!("{at}.version_header"),
                    "not a valid HTTP header name",
                );
            }
            parsed
        });
        let late_write_window = r
            .late_write_window
            .as_ref()
            .map(|d| self.duration(d, &format!("{at}.late_write_window")));
        if let Some(path) = &r.read_path
            && !path.get_ref().contains("{external_id}")
        {
            self.problem(
                path,
                format!("{at}.read_path"),
                "expected a path containing {external_id}",
            );
            ok = false;
        }
        if !ok {
            return None;
        }
        let http = http?;
        let late_write_window = match late_write_window {
            Some(window) => window?,
            None => http.timeout.saturating_mul(3),
        };
        let read = r.read_path.as_ref().map(|p| ReadSpec {
            path: UriTemplate(p.get_ref().clone()),
            results_path: r
                .read_results_path
                .as_ref()
                .map(|p| FieldPath::parse(p.get_ref())),
        });
        if read.is_none()
            && let Some(results) = &r.read_results_path
        {
            self.problem(
                results,
                format!("{at}.read_results_path"),
                "needs `read_path`",
            );
            return None;
        }
        Some(DestinationSpec::Http(HttpDestinationSpec {
            http,
            mode: mode?,
            version_header,
            late_write_window,
            read,
            external_id_field: r.external_id_field.as_ref().map(|f| f.get_ref().clone()),
            dest_id_field: match (&r.dest_id_field, mode_name) {
                (Some(field), _) => Some(FieldPath::parse(field.get_ref())),
                (None, "lookup") => Some(FieldPath::parse("id")),
                (None, _) => None,
            },
            concurrency: concurrency?,
        }))
    }

    fn write_mode(
        &mut self,
        raw: &Spanned<RawDestination>,
        mode: &str,
        at: &str,
    ) -> Option<WriteMode> {
        let r = raw.get_ref();
        let need = |v: &mut Self,
                    field: &Option<Spanned<String>>,
                    key: &str,
                    placeholder: Option<&str>| {
            let Some(value) = field else {
                v.problem(raw, at, format!("mode = {mode:?} needs `{key}`"));
                return None;
            };
            if let Some(placeholder) = placeholder
                && !value.get_ref().contains(placeholder)
            {
                v.problem(
                    value,
                    format!("{at}.{key}"),
                    format!("expected a path containing {placeholder}"),
                );
                return None;
            }
            Some(UriTemplate(value.get_ref().clone()))
        };
        match mode {
            "put" => {
                let path = need(self, &r.path, "path", Some("{external_id}"));
                let method = self.method(r.method.as_ref(), Method::PUT, &format!("{at}.method"));
                Some(WriteMode::Put {
                    path: path?,
                    method: method?,
                })
            }
            "post" => {
                let path = need(self, &r.path, "path", None);
                let header = r.idempotency_header.as_ref().map_or(
                    Some(HeaderName::from_static("idempotency-key")),
                    |h| {
                        let parsed = HeaderName::from_str(h.get_ref()).ok();
                        if parsed.is_none() {
                            self.problem(
                                h,
                                format!("{at}.idempotency_header"),
                                "not a valid HTTP header name",
                            );
                        }
                        parsed
                    },
                );
                Some(WriteMode::Post {
                    path: path?,
                    idempotency_header: header?,
                })
            }
            _ => {
                let lookup_path = need(self, &r.lookup_path, "lookup_path", None);
                let create_path = need(self, &r.create_path, "create_path", None);
                let update_path = need(self, &r.update_path, "update_path", Some("{dest_id}"));
                let update_method = self.method(
                    r.update_method.as_ref(),
                    Method::PATCH,
                    &format!("{at}.update_method"),
                );
                let lookup_param = r.lookup_param.as_ref().map(|p| p.get_ref().clone());
                if let Some(path) = &lookup_path
                    && lookup_param.is_none()
                    && !path.0.contains("{external_id}")
                {
                    self.problem(
                        raw,
                        at,
                        "mode = \"lookup\" needs `lookup_param`, or {external_id} in `lookup_path`",
                    );
                    return None;
                }
                Some(WriteMode::Lookup {
                    lookup_path: lookup_path?,
                    lookup_param,
                    results_path: path_or(r.lookup_results_path.as_ref(), "data"),
                    create_path: create_path?,
                    update_path: update_path?,
                    update_method: update_method?,
                })
            }
        }
    }
}

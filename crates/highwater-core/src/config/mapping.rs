//! Checks a sync's `[mapping]`: how a record becomes a destination object.

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
                    if template.parts.iter().any(|p| {
                        matches!(p, TemplatePart::Field(_) | TemplatePart::LowerField(_))
                    }) =>
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
            if let Some(v) = self.json(value, format!("{at}.constants.{out}")) {
                constants.push((FieldPath::parse(out), v));
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
        let mut write_only = Vec::new();
        for name in &raw.write_only {
            let path = FieldPath::parse(name.get_ref());
            let sent = fields.iter().any(|(out, _)| *out == path)
                || constants.iter().any(|(out, _)| *out == path);
            if sent {
                write_only.push(path);
            } else {
                self.problem(
                    name,
                    format!("{at}.write_only"),
                    format!(
                        "{:?} is not a field the mapping writes (a key of `fields` or `constants`)",
                        name.get_ref()
                    ),
                );
            }
        }
        Some(MappingSpec {
            external_id: external_id?,
            fields,
            constants,
            required,
            write_only,
        })
    }
}

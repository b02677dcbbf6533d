//! Checks a sync's `[deletes]`: the deletes feed (an endpoint listing deleted
//! ids, read like the source and inheriting what it does not say, or a marker in
//! the records), the DELETE request the destination takes, and the share a
//! `full` run may delete.

use serde_json::Value;
use serde_spanned::Spanned;

use super::raw::*;
use super::*;
use crate::sink::DeleteRequest;

impl Validator<'_> {
    pub(super) fn deletes(
        &mut self,
        raw: Spanned<RawDeletes>,
        source: Option<&SourceSpec>,
        destination: Option<&DestinationSpec>,
        at: &str,
    ) -> Option<DeletesSpec> {
        let at = format!("{at}.deletes");
        let table = Spanned::new(raw.span(), ());
        let mut raw = raw.into_inner();
        let pagination = raw.pagination.take();
        let pagination_span = pagination.as_ref().map(Spanned::span);
        let feed = match (&raw.path, &raw.marker_field) {
            (Some(_), Some(marker)) => {
                self.problem(
                    marker,
                    format!("{at}.marker_field"),
                    "a sync reads deletions from an endpoint (`path`) or from a marker in its records (`marker_field`), not both",
                );
                None
            }
            // Neither: only `run --full` finds deletions. Keys of an endpoint
            // or a marker mean one was meant.
            (None, None) => self.no_feed(&raw, pagination_span, &at),
            (Some(path), None) => self.delete_endpoint(&raw, path, pagination, source?, &at),
            (None, Some(field)) => self.delete_marker(&raw, field, pagination_span, &at),
        };
        let soft_delete = self.soft_delete(&raw, &at);
        let delete_path = match &soft_delete {
            // A soft delete is a write: no DELETE request.
            Some(Some(_)) => match &raw.delete_path {
                Some(path) => {
                    self.problem(
                        path,
                        format!("{at}.delete_path"),
                        "a sync soft-deletes (`soft_delete`) or deletes (`delete_path`), not both",
                    );
                    None
                }
                None => Some(None),
            },
            Some(None) => self.delete_path(&raw, &table, destination?, &at),
            // `soft_delete` was meant, and is wrong: that is the problem.
            None => None,
        };
        if let (Some(Some(_)), Some(feed)) = (&soft_delete, &feed)
            && !matches!(feed, DeleteFeed::Marker { .. })
            && let Some(fields) = &raw.soft_delete
        {
            self.problem(
                fields,
                format!("{at}.soft_delete"),
                "needs `marker_field`: a soft delete writes the marked record, which only a marker in the records gives",
            );
            return None;
        }
        let full_delete_limit = match &raw.full_delete_limit {
            None => Some(DEFAULT_FULL_DELETE_LIMIT),
            Some(share) if *share.get_ref() > 0.0 && *share.get_ref() <= 1.0 => {
                Some(*share.get_ref())
            }
            Some(share) => {
                self.problem(
                    share,
                    format!("{at}.full_delete_limit"),
                    "expected a share above 0 and at most 1, like 0.1 for 10%",
                );
                None
            }
        };
        Some(DeletesSpec {
            feed: feed?,
            delete_path: delete_path?,
            soft_delete: soft_delete?,
            full_delete_limit: full_delete_limit?,
        })
    }

    /// The endpoint, as a source of its own: what it does not say is the
    /// source's (the API, its auth, the page size and, unless given, the
    /// records path, id field, time format, bounds, lookback and pagination).
    fn delete_endpoint(
        &mut self,
        raw: &RawDeletes,
        path: &Spanned<String>,
        raw_pagination: Option<Spanned<RawPagination>>,
        source: &SourceSpec,
        at: &str,
    ) -> Option<DeleteFeed> {
        let mut ok = true;
        if let Some(value) = &raw.marker_value {
            self.problem(value, format!("{at}.marker_value"), "needs `marker_field`");
            ok = false;
        }
        if path.get_ref().is_empty() {
            self.problem(
                path,
                format!("{at}.path"),
                "expected the endpoint's path, like \"/v1/invoices/deleted\"",
            );
            ok = false;
        }
        let time_format = match &raw.time_format {
            None => Some(source.time_format.clone()),
            Some(s) => self.time_format(s, source.time_format.zone(), &format!("{at}.time_format")),
        };
        let lookback = self.duration_or(
            raw.lookback.as_ref(),
            &format!("{at}.lookback"),
            source.lookback,
        );
        let own_pagination = raw_pagination.is_some();
        let pagination = match raw_pagination {
            None => Some(source.pagination.clone()),
            Some(p) => self.pagination(p, at),
        };
        // Bounds given here are the endpoint's own; otherwise the source's,
        // with how strictly it reads them.
        let own_bounds = raw.lower_bound_param.is_some() || raw.upper_bound_param.is_some();
        let keyset = matches!(pagination, Some(Pagination::Keyset { .. }));
        // The feed's own query or body (NetSuite's `deletedRecord` by
        // SuiteQL), its bounds as `{lower}` and `{upper}`, as the source's.
        let (params, params_from_env) = self.params(&raw.params, at);
        let body = self.source_body(
            raw.body.as_ref(),
            raw.body_params_path.as_ref(),
            raw.page_params_in.as_ref(),
            pagination.as_ref(),
            at,
        );
        let feed = SourceSpec {
            path: path.get_ref().clone(),
            params,
            params_from_env,
            body: body?,
            window_headers: Vec::new(),
            records_path: raw.records_path.as_ref().map_or_else(
                || source.records_path.clone(),
                |p| FieldPath::parse(p.get_ref()),
            ),
            id_field: raw.id_field.as_ref().map_or_else(
                || source.id_field.clone(),
                |p| FieldPath::parse(p.get_ref()),
            ),
            updated_at_field: path_or(raw.deleted_at_field.as_ref(), "deleted_at"),
            version_field: None,
            time_format: time_format?,
            lookback: lookback?,
            lower_bound_param: if own_bounds {
                raw.lower_bound_param.as_ref().map(|p| p.get_ref().clone())
            } else {
                source.lower_bound_param.clone()
            },
            upper_bound_param: if own_bounds {
                raw.upper_bound_param.as_ref().map(|p| p.get_ref().clone())
            } else {
                source.upper_bound_param.clone()
            },
            lower_bound_exclusive: !own_bounds && source.lower_bound_exclusive,
            upper_bound_exclusive: !own_bounds && source.upper_bound_exclusive,
            sorted: keyset || (!own_pagination && source.sorted),
            pagination: pagination?,
            ..source.clone()
        };
        ok.then(|| DeleteFeed::Endpoint(Box::new(feed)))
    }

    /// `soft_delete = { field = value, ... }`: the fields a soft delete sets.
    fn soft_delete(
        &mut self,
        raw: &RawDeletes,
        at: &str,
    ) -> Option<Option<Vec<(FieldPath, Value)>>> {
        let Some(table) = &raw.soft_delete else {
            return Some(None);
        };
        if table.get_ref().is_empty() {
            self.problem(
                table,
                format!("{at}.soft_delete"),
                "expected the fields a soft delete sets, like { deleted = true }",
            );
            return None;
        }
        let mut fields = Vec::new();
        let mut ok = true;
        for (field, value) in table.get_ref() {
            match self.json(value, format!("{at}.soft_delete.{field}")) {
                Some(v) => fields.push((FieldPath::parse(field), v)),
                None => ok = false,
            }
        }
        ok.then_some(Some(fields))
    }

    fn no_feed(
        &mut self,
        raw: &RawDeletes,
        pagination: Option<std::ops::Range<usize>>,
        at: &str,
    ) -> Option<DeleteFeed> {
        let marker_value = ("marker_value", raw.marker_value.as_ref().map(|s| s.span()));
        let mut ok = true;
        for (key, span) in endpoint_keys(raw, pagination)
            .into_iter()
            .chain([marker_value])
        {
            if let Some(span) = span {
                let needs = if key == "marker_value" {
                    "needs `marker_field`"
                } else {
                    "needs `path` (an endpoint listing deleted ids)"
                };
                self.problem(&Spanned::new(span, ()), format!("{at}.{key}"), needs);
                ok = false;
            }
        }
        ok.then_some(DeleteFeed::Absent)
    }

    fn delete_marker(
        &mut self,
        raw: &RawDeletes,
        field: &Spanned<String>,
        pagination: Option<std::ops::Range<usize>>,
        at: &str,
    ) -> Option<DeleteFeed> {
        let mut ok = true;
        for (key, span) in endpoint_keys(raw, pagination) {
            if let Some(span) = span {
                self.problem(
                    &Spanned::new(span, ()),
                    format!("{at}.{key}"),
                    "applies only to a deletes endpoint (`path`), not to a marker",
                );
                ok = false;
            }
        }
        if field.get_ref().is_empty() {
            self.problem(
                field,
                format!("{at}.marker_field"),
                "expected the field that marks a deleted record, like \"deleted\"",
            );
            ok = false;
        }
        let value = match &raw.marker_value {
            None => None,
            Some(value) => {
                if let Some(message) = not_json(value.get_ref()) {
                    self.problem(value, format!("{at}.marker_value"), message);
                    ok = false;
                }
                serde_json::to_value(value.get_ref()).ok()
            }
        };
        ok.then(|| DeleteFeed::Marker {
            field: FieldPath::parse(field.get_ref()),
            value,
        })
    }

    /// The DELETE request: an HTTP destination needs one, naming the record by
    /// `{external_id}` or `{dest_id}`; a file destination removes its own line.
    fn delete_path(
        &mut self,
        raw: &RawDeletes,
        table: &Spanned<()>,
        destination: &DestinationSpec,
        at: &str,
    ) -> Option<Option<UriTemplate>> {
        let key = format!("{at}.delete_path");
        match (destination.delete_request(), &raw.delete_path) {
            (DeleteRequest::Own(_), None) => Some(None),
            (DeleteRequest::Own(how), Some(path)) => {
                self.problem(path, key, format!("does not apply: {how}"));
                None
            }
            (DeleteRequest::Path { .. }, None) => {
                self.problem(
                    table,
                    at,
                    "an http destination needs `delete_path`, the path a DELETE request takes, with {external_id} or {dest_id}",
                );
                None
            }
            (DeleteRequest::Path { knows_dest_id }, Some(path)) => {
                let text = path.get_ref();
                let by_dest_id = text.contains("{dest_id}");
                if !by_dest_id && !text.contains("{external_id}") {
                    self.problem(
                        path,
                        key,
                        "expected a path containing {external_id} or {dest_id}",
                    );
                    return None;
                }
                if by_dest_id && !knows_dest_id {
                    self.problem(
                        path,
                        key,
                        "{dest_id} needs `dest_id_field` (where a write's answer says the destination id) or mode = \"lookup\"",
                    );
                    return None;
                }
                Some(Some(UriTemplate(text.clone())))
            }
        }
    }
}

/// The keys that only a deletes endpoint reads, with where each was set.
fn endpoint_keys(
    raw: &RawDeletes,
    pagination: Option<std::ops::Range<usize>>,
) -> [(&'static str, Option<std::ops::Range<usize>>); 12] {
    [
        ("params", raw.params.values().next().map(|s| s.span())),
        ("body", raw.body.as_ref().map(|s| s.span())),
        (
            "body_params_path",
            raw.body_params_path.as_ref().map(|s| s.span()),
        ),
        (
            "page_params_in",
            raw.page_params_in.as_ref().map(|s| s.span()),
        ),
        ("records_path", raw.records_path.as_ref().map(|s| s.span())),
        ("id_field", raw.id_field.as_ref().map(|s| s.span())),
        (
            "deleted_at_field",
            raw.deleted_at_field.as_ref().map(|s| s.span()),
        ),
        ("time_format", raw.time_format.as_ref().map(|s| s.span())),
        (
            "lower_bound_param",
            raw.lower_bound_param.as_ref().map(|s| s.span()),
        ),
        (
            "upper_bound_param",
            raw.upper_bound_param.as_ref().map(|s| s.span()),
        ),
        ("lookback", raw.lookback.as_ref().map(|s| s.span())),
        ("pagination", pagination),
    ]
}

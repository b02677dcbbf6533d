//! Owns how a source's page requests differ from a GET with the page's
//! parameters in the query. Search endpoints (HubSpot's CRM search, Notion's
//! database query) and GraphQL APIs take their filter, page size and cursor
//! in a POST's JSON body (`body`): the reader builds every page's parameters
//! as it does for a GET, and they go into the body at `body_params_path`
//! here, the configured `params` staying in the URL's query (an API key, a
//! version) — or all of them in the query (`page_params_in = "query"`:
//! NetSuite's SuiteQL). Some APIs take the window in a header (Xero's
//! `If-Modified-Since`): a configured header whose value says `{lower}` or
//! `{upper}` is written with the run's window.

use std::collections::HashSet;

use reqwest::header::{HeaderName, HeaderValue};
use serde_json::{Map, Value};
use url::Url;

use super::{Window, bounds};
use crate::config::{Pagination, SourceSpec};
use crate::http::Request;

/// What a run adds to its page requests: the body, the configured one with
/// the window written where its strings say `{lower}` and `{upper}`, and the
/// headers that carry the window.
#[derive(Debug)]
pub struct PageRequests {
    /// The body, when the pages are asked for with a POST.
    body: Option<Value>,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Where in the body the page's parameters go; `None` for the query.
    params_at: Option<Vec<String>>,
    in_query: HashSet<String>,
    /// The cursor's token, sent as the string the API gave, whatever it
    /// looks like.
    token_param: Option<String>,
}

impl PageRequests {
    /// `None` for a source whose pages are plain GETs.
    pub fn new(spec: &SourceSpec, window: Window) -> Option<PageRequests> {
        if spec.body.is_none() && spec.window_headers.is_empty() {
            return None;
        }
        let token_param = match &spec.pagination {
            Pagination::Cursor { token_param, .. } => Some(token_param.clone()),
            _ => None,
        };
        // A header value the config accepted stays one with a time in it.
        let headers = spec
            .window_headers
            .iter()
            .filter_map(|(name, value)| {
                let filled = bounds::fill_params(value.expose(), spec, window);
                let mut value = HeaderValue::from_str(&filled).ok()?;
                value.set_sensitive(true);
                Some((name.clone(), value))
            })
            .collect();
        Some(PageRequests {
            body: spec.body.as_ref().map(|b| fill(&b.template, spec, window)),
            headers,
            params_at: spec
                .body
                .as_ref()
                .and_then(|b| b.params_at.as_ref())
                .map(|at| at.segments().to_vec()),
            in_query: spec.params.iter().map(|(name, _)| name.clone()).collect(),
            token_param,
        })
    }

    /// The request for a page whose parameters are `query`.
    fn request(&self, url: Url, query: Vec<(String, String)>) -> Request {
        let mut request = Request::get(url);
        request.headers.clone_from(&self.headers);
        let Some(filled) = &self.body else {
            request.query = query;
            return request;
        };
        request.method = reqwest::Method::POST;
        let Some(params_at) = &self.params_at else {
            request.query = query;
            request.body = Some(bytes::Bytes::from(filled.to_string()));
            return request;
        };
        let mut body = filled.clone();
        let mut params = Map::new();
        for (name, value) in query {
            if self.in_query.contains(&name) {
                request.query.push((name, value));
                continue;
            }
            let value = match value.parse::<i64>() {
                // A page size, an offset or a page number is a number to a
                // GraphQL `Int` and to a search API alike; a token is the
                // string the API gave.
                Ok(n) if self.token_param.as_ref() != Some(&name) => Value::from(n),
                _ => Value::String(value),
            };
            params.insert(name, value);
        }
        if let Some(at) = object_at(&mut body, params_at) {
            at.extend(params);
        }
        request.body = Some(bytes::Bytes::from(body.to_string()));
        request
    }
}

/// The request for a page: a GET with `query`, or as the source says.
pub fn page_request(
    shape: Option<&PageRequests>,
    url: Url,
    query: Vec<(String, String)>,
) -> Request {
    match shape {
        Some(shape) => shape.request(url, query),
        None => {
            let mut request = Request::get(url);
            request.query = query;
            request
        }
    }
}

/// The object at `path`, made where missing; `None` where something else is
/// there (the config refuses such a body).
fn object_at<'v>(value: &'v mut Value, path: &[String]) -> Option<&'v mut Map<String, Value>> {
    let mut at = value;
    for segment in path {
        at = at
            .as_object_mut()?
            .entry(segment.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    at.as_object_mut()
}

fn fill(template: &Value, spec: &SourceSpec, window: Window) -> Value {
    match template {
        Value::String(s) => Value::String(bounds::fill_params(s, spec, window)),
        Value::Array(items) => Value::Array(items.iter().map(|v| fill(v, spec, window)).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), fill(v, spec, window)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn each_page_s_parameters_go_into_the_body_and_the_configured_ones_stay_in_the_query() {
        let text = r#"
[[sync]]
name = "s"
[sync.source]
base_url = "http://127.0.0.1:1"
path = "/crm/v3/objects/contacts/search"
params = { hapikey = "k" }
body = { filterGroups = [{ filters = [{ propertyName = "lastmodifieddate", operator = "GTE", value = "{lower}" }] }] }
time_format = "epoch_millis"
page_size_param = "limit"
pagination = { style = "cursor", token_path = "paging.next.after", token_param = "after" }
[sync.destination]
type = "jsonl"
file = "out.jsonl"
"#;
        let config = crate::config::parse(text, Path::new("hw.toml"), &|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        let spec = &config.syncs[0].source;
        let window = Window {
            lower: "2026-01-01T00:00:00Z".parse().ok(),
            watermark: jiff::Timestamp::UNIX_EPOCH,
        };
        let body = PageRequests::new(spec, window).unwrap_or_else(|| panic!("a body"));
        let url = Url::parse("http://127.0.0.1:1/crm/v3/objects/contacts/search")
            .unwrap_or_else(|e| panic!("{e}"));
        let query = vec![
            ("hapikey".to_owned(), "k".to_owned()),
            ("limit".to_owned(), "100".to_owned()),
            ("after".to_owned(), "200".to_owned()),
        ];
        let request = page_request(Some(&body), url, query);
        assert_eq!(request.method, reqwest::Method::POST);
        assert_eq!(request.query, [("hapikey".to_owned(), "k".to_owned())]);
        let sent: Value = serde_json::from_slice(request.body.as_deref().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        // The page size a number, the token the string the API gave.
        assert_eq!(sent["limit"], 100);
        assert_eq!(sent["after"], "200");
        assert_eq!(
            sent["filterGroups"][0]["filters"][0]["value"],
            "1767225600000"
        );
    }
}

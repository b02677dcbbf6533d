//! Owns next URLs: reading a page and the URL of the next one from the
//! answer (`next_url_path` in its body, or its `Link` header, RFC 8288), and
//! telling what those URLs count — pages (`numbered_next`) or an offset
//! (`offset_next`) — so that the reader walks them as pages or offsets, which
//! read around a record that moves while the run pages, rather than as
//! opaque URLs, which cannot.
//! Invariant: a URL taken for a count changes nothing but that one number.

use serde_json::Value;
use url::Url;

use super::{Cursor, Page, Reader, SourceError, linked_overlap, parse_url, walks};
use crate::config::NextUrlFrom;
use crate::http::redact;
use crate::stop::Stop;

impl Reader<'_> {
    /// The next page of a `next_url` listing: the first from the configured
    /// request, the others from the URLs the API gave.
    pub(super) async fn next_url_page(
        &mut self,
        from: NextUrlFrom,
        stop: &Stop,
    ) -> Result<Page, SourceError> {
        // A next URL is the API's own: it may not carry the bound.
        let (url, query, floor) = match &self.cursor {
            Cursor::NextUrl { url } => (parse_url(url)?, Vec::new(), None),
            _ => (self.list_url()?, self.base_query(), self.bound_floor()),
        };
        // The first page's request is ours; the next URLs are the API's.
        let query_given = !matches!(self.cursor, Cursor::NextUrl { .. });
        let (body, headers) = self.fetch_page(url.clone(), query.clone(), stop).await?;
        let served = self
            .spec
            .records_path
            .get(&body)
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let next = match &from {
            NextUrlFrom::Body(path) => match path.get(&body) {
                Some(Value::String(s)) if !s.is_empty() => url.join(s).ok(),
                _ => None,
            },
            NextUrlFrom::LinkHeader => headers
                .get_all(reqwest::header::LINK)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(|v| link_next(v, &url)),
        };
        let mut sent = url.clone();
        if !query.is_empty() {
            sent.query_pairs_mut().extend_pairs(&query);
        }
        let mut numbered = None;
        let mut counted = None;
        let cursor_after = match next {
            None => Cursor::End,
            Some(next) => {
                let next = self.checked_next_url(next)?;
                let next_url = parse_url(&next)?;
                numbered = numbered_next(&sent, &next_url);
                if numbered.is_none() {
                    counted = offset_next(&sent, &next_url, served);
                }
                if numbered.is_none() && counted.is_none() {
                    if !self.seen.insert(next.clone()) {
                        return Err(SourceError::Loop {
                            what: "next URL",
                            detail: redact(&next_url),
                        });
                    }
                    self.send_ahead(next_url, Vec::new(), None, stop);
                }
                Cursor::NextUrl { url: next }
            }
        };
        // The first page came full, and its next URL is not where
        // the config looks: more may follow.
        let unnamed = match &from {
            NextUrlFrom::Body(path)
                if matches!(cursor_after, Cursor::End)
                    && query_given
                    && self.spec.page_size_param.is_some() =>
            {
                path.get(&body).is_none_or(Value::is_null).then_some(path)
            }
            _ => None,
        };
        let records = self.records(body, &url)?;
        if let Some(path) = unnamed
            && records.len() >= self.spec.page_size as usize
        {
            crate::obs::FullPageEndsList {
                sync: self.api.sync(),
                records: records.len(),
                path: &path.to_string(),
                key: "next_url_path",
            }
            .emit();
        }
        let records = self.settle(records, &url, query, floor, stop).await?;
        // Pages by number: from here on each is read with the one
        // before it again, as a page-number walk is, so that a record
        // that moves under the run cannot hide another.
        let cursor_after = match (numbered, counted) {
            (None, Some((param, next))) => {
                crate::obs::OffsetNextUrls {
                    sync: self.api.sync(),
                    param: &param,
                }
                .emit();
                let keys: Vec<String> = records.iter().map(walks::anchor_key).collect();
                let overlap = linked_overlap(self.spec) as usize;
                Cursor::LinkedOffset {
                    param,
                    next,
                    tail: keys[keys.len().saturating_sub(overlap)..].to_vec(),
                }
            }
            (Some((param, first_page, next)), _) => {
                crate::obs::NumberedNextUrls {
                    sync: self.api.sync(),
                    param: &param,
                }
                .emit();
                let keys: Vec<String> = records.iter().map(walks::anchor_key).collect();
                let overlap = linked_overlap(self.spec) as usize;
                Cursor::LinkedPage {
                    param,
                    first_page,
                    next,
                    tail: keys[keys.len().saturating_sub(overlap)..].to_vec(),
                }
            }
            (None, None) => cursor_after,
        };
        Ok(self.page(records, cursor_after, 1))
    }
}

/// Where an API's next URLs number their pages (GitHub's `Link` header:
/// `page=2`, `page=3`…): the one query parameter the next URL adds to the
/// request's, or counts up by one, the first page's number and the next
/// page's. `None` for anything else — an opaque cursor, a count up by more
/// than one (an offset), another path, or more than one parameter changed.
/// Such next URLs are a page-number walk's, with its blind spot: a record
/// that leaves a page already read moves the others back, and the one
/// that crosses the boundary is never served.
pub fn numbered_next(current: &Url, next: &Url) -> Option<(String, u64, u64)> {
    let (param, was, number) = counted_param(current, next)?;
    match was {
        None if number == 1 || number == 2 => Some((param, number - 1, number)),
        Some(was) => (number == was + 1).then(|| (param, was.min(1), number)),
        None => None,
    }
}

/// Where an API's next URLs count an offset (ServiceNow's `Link` header:
/// `sysparm_offset=100`, `200`…): the one query parameter the next URL adds
/// to the request's, or changes, by the number of records the page held
/// (more than one), and the next page's offset. Followed as they are, a
/// record that leaves a page already read hides the one after it: such next
/// URLs are an offset walk's, which reads around it.
pub fn offset_next(current: &Url, next: &Url, records: usize) -> Option<(String, u64)> {
    let (param, was, now) = counted_param(current, next)?;
    (records > 1 && now.checked_sub(was.unwrap_or(0)) == Some(records as u64))
        .then_some((param, now))
}

/// The one query parameter `next` adds to `current`'s or changes, both
/// numbers, on the same origin and path: its name, the number before (none
/// where it was added) and after.
fn counted_param(current: &Url, next: &Url) -> Option<(String, Option<u64>, u64)> {
    if current.origin() != next.origin() || current.path() != next.path() {
        return None;
    }
    let pairs = |url: &Url| -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        pairs.sort();
        pairs
    };
    let (before, after) = (pairs(current), pairs(next));
    let only = |of: &[(String, String)], not_in: &[(String, String)]| {
        let mut rest = not_in.to_vec();
        of.iter()
            .filter(|pair| match rest.iter().position(|p| p == *pair) {
                Some(i) => {
                    rest.swap_remove(i);
                    false
                }
                None => true,
            })
            .cloned()
            .collect::<Vec<_>>()
    };
    let (gone, added) = (only(&before, &after), only(&after, &before));
    let [(param, number)] = added.as_slice() else {
        return None;
    };
    let number: u64 = number.parse().ok()?;
    match gone.as_slice() {
        [] => Some((param.clone(), None, number)),
        [(was_param, was)] if was_param == param => {
            Some((param.clone(), Some(was.parse().ok()?), number))
        }
        _ => None,
    }
}

/// The `rel="next"` target of a `Link` header (RFC 8288), resolved against the
/// request URL.
///
/// An entry that does not parse is skipped rather than ending the search: one
/// garbled link before `next` must not make a run believe it read the last page.
/// A `,` or `;` inside `<>` or a quoted value belongs to it (URLs carry commas in
/// their query strings); parameter names ignore case, and only the first `rel` of
/// a link counts.
pub fn link_next(header: &str, base: &Url) -> Option<Url> {
    let mut rest = header;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        if rest.is_empty() {
            return None;
        }
        match parse_link(rest) {
            Ok((link, after)) => {
                if link.is_next()
                    && let Ok(url) = base.join(link.target)
                {
                    return Some(url);
                }
                rest = after;
            }
            Err(after) => rest = after,
        }
    }
}

/// One entry of a `Link` header.
struct Link<'a> {
    target: &'a str,
    /// The value of the first `rel` parameter, unquoted.
    rel: Option<String>,
}

impl Link<'_> {
    fn is_next(&self) -> bool {
        self.rel.as_deref().is_some_and(|rel| {
            rel.split_whitespace()
                .any(|r| r.eq_ignore_ascii_case("next"))
        })
    }
}

/// Parses the entry at the start of `text` into the link and the text after it.
/// A malformed entry gives the text after it instead, to go on from.
fn parse_link(text: &str) -> Result<(Link<'_>, &str), &str> {
    let Some(inner) = text.strip_prefix('<') else {
        return Err(skip_entry(text));
    };
    let Some(close) = inner.find('>') else {
        // No entry after this one has a whole target either.
        return Err("");
    };
    // A `<` that was never closed started a broken entry; the link is the last one.
    let open = inner[..close].rfind('<').map_or(0, |i| i + 1);
    let target = &inner[open..close];
    let mut rest = &inner[close + 1..];
    let mut rel = None;
    loop {
        rest = rest.trim_start();
        let Some(param) = rest.strip_prefix(';') else {
            break;
        };
        rest = param.trim_start();
        let name_end = rest
            .find(|c: char| matches!(c, '=' | ';' | ',') || c.is_whitespace())
            .unwrap_or(rest.len());
        let name = &rest[..name_end];
        if name.is_empty() {
            return Err(skip_entry(rest));
        }
        rest = rest[name_end..].trim_start();
        let mut value = String::new();
        if let Some(after_equals) = rest.strip_prefix('=') {
            rest = after_equals.trim_start();
            if let Some(quoted) = rest.strip_prefix('"') {
                let Some((unquoted, after)) = quoted_string(quoted) else {
                    return Err(skip_entry(quoted));
                };
                value = unquoted;
                rest = after;
            } else {
                let end = rest
                    .find(|c: char| matches!(c, ';' | ',') || c.is_whitespace())
                    .unwrap_or(rest.len());
                value = rest[..end].to_owned();
                rest = &rest[end..];
            }
        }
        if rel.is_none() && name.eq_ignore_ascii_case("rel") {
            rel = Some(value);
        }
    }
    if !rest.is_empty() && !rest.starts_with(',') {
        return Err(skip_entry(rest));
    }
    Ok((Link { target, rel }, rest))
}

/// The text of a quoted string after its opening `"`, unescaped, and what follows
/// its closing `"`; `None` when it is never closed.
fn quoted_string(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[i + 1..])),
            '\\' => value.extend(chars.next().map(|(_, escaped)| escaped)),
            c => value.push(c),
        }
    }
    None
}

/// The text after the next `,`, or nothing. Skipping a malformed entry splits at
/// every comma, even inside `<>` or quotes: the pieces that leaves are malformed
/// too and skipped in turn, while a stray `<` or `"` cannot hide the links after it.
fn skip_entry(text: &str) -> &str {
    text.split_once(',').map_or("", |(_, after)| after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn link_header_next_is_found_among_others() {
        let base = Url::parse("https://api.example.com/v1/items?page=2")
            .unwrap_or_else(|_| unreachable!());
        let header = r#"<https://api.example.com/v1/items?page=1>; rel="prev", </v1/items?page=3>; rel="next""#;
        assert_eq!(
            link_next(header, &base).map(|u| u.to_string()),
            Some("https://api.example.com/v1/items?page=3".to_owned())
        );
        assert_eq!(link_next(r#"<x>; rel="prev""#, &base), None);
    }

    #[test]
    fn link_header_skips_a_malformed_entry_before_next() {
        let base = Url::parse("https://api.example.com/v1/items?page=2")
            .unwrap_or_else(|_| unreachable!());
        let next = Some("https://api.example.com/v1/items?page=3".to_owned());
        for header in [
            r#"https://api.example.com/v1/items?page=1; rel="prev", </v1/items?page=3>; rel="next""#,
            r#"garbage, </v1/items?page=3>; rel="next""#,
            r#"<>>; rel="prev", </v1/items?page=3>; rel="next""#,
            r#"</v1/items?page=1> rel="prev", </v1/items?page=3>; rel="next""#,
        ] {
            assert_eq!(
                link_next(header, &base).map(|u| u.to_string()),
                next,
                "{header}"
            );
        }
    }

    #[test]
    fn link_header_targets_and_params_may_hold_commas() {
        let base = Url::parse("https://api.example.com/v1/items?page=2")
            .unwrap_or_else(|_| unreachable!());
        // A `,` inside `<>` or a quoted value does not end the entry.
        let header = r#"</v1/items?fields=id,name&page=1>; rel="prev"; title="back, one", </v1/items?fields=id,name&page=3>; title="on; and, on"; rel="next""#;
        assert_eq!(
            link_next(header, &base).map(|u| u.to_string()),
            Some("https://api.example.com/v1/items?fields=id,name&page=3".to_owned())
        );
    }

    #[test]
    fn link_header_param_names_ignore_case_and_space_around_equals() {
        let base = Url::parse("https://api.example.com/v1/items?page=2")
            .unwrap_or_else(|_| unreachable!());
        let next = Some("https://api.example.com/v1/items?page=3".to_owned());
        for header in [
            r#"</v1/items?page=3>; REL="next""#,
            r#"</v1/items?page=3> ; rel = "next""#,
            r#"</v1/items?page=3>;Rel=Next"#,
            r#"</v1/items?page=3>; rel="last next""#,
        ] {
            assert_eq!(
                link_next(header, &base).map(|u| u.to_string()),
                next,
                "{header}"
            );
        }
        // Only the first `rel` of a link counts (RFC 8288, 3.3).
        assert_eq!(
            link_next(r#"</v1/items?page=3>; rel="prev"; rel="next""#, &base),
            None
        );
    }

    /// Link targets as APIs write them: absolute or relative, with `,` and `;` in
    /// their query strings.
    const LINK_TARGETS: &[&str] = &[
        "https://api.example.com/v1/items?page=3",
        "https://api.example.com/v1/items?fields=id,name&cursor=a;b",
        "/v1/items?cursor=eyJpZCI6IDd9",
        "?page=4",
        "items?page=5&sort=updated_at,id",
        "https://other.example.org/next",
    ];

    /// Entries that are not links. An unclosed `<` pairs with the next entry's
    /// `>`, which then still reads as that entry's own target; no entry holds a
    /// `>` that could close an earlier `<` before its own.
    const MALFORMED_LINKS: &[&str] = &[
        "garbage",
        "https://api.example.com/v1/items?page=9; rel=\"next\"",
        "rel=\"next\"",
        "; rel=next",
        "<https://api.example.com/v1/items?page=9> rel=\"next\"",
        "<https://api.example.com/v1/items?page=9>; =next",
        "<https://api.example.com/v1/items?page=9>>; rel=next",
        "<https://api.example.com/v1/items?page=9>; rel=\"next\" extra",
        "<https://api.example.com/v1/items?page=9; rel=\"next\"",
        "\"rel=next",
    ];

    /// One well-formed link: its text and, when its first `rel` says `next`, its
    /// target.
    fn well_formed_link() -> impl Strategy<Value = (String, Option<&'static str>)> {
        let rel_values = proptest::collection::vec(
            proptest::sample::select(vec![
                "next",
                "NEXT",
                "Next",
                "prev",
                "first",
                "last",
                "nextpage",
                "alternate",
            ]),
            0..3,
        );
        let other_params = proptest::collection::vec(
            proptest::sample::select(vec![
                r#"title="a, b; c""#,
                r#"title="say \"next\"""#,
                "type=text/html",
                "hreflang=en",
                "foo",
                "title*=UTF-8'de'n%c3%a4chstes",
            ]),
            0..3,
        );
        (
            proptest::sample::select(LINK_TARGETS.to_vec()),
            proptest::option::of((
                rel_values,
                proptest::sample::select(vec!["rel", "REL", "Rel"]),
                any::<bool>(),
            )),
            other_params,
            any::<prop::sample::Index>(),
            proptest::sample::select(vec![";", "; ", " ; ", ";\t"]),
            proptest::sample::select(vec!["=", " = "]),
        )
            .prop_map(|(target, rel, params, at, semicolon, equals)| {
                let mut next = None;
                let mut params: Vec<String> = params.into_iter().map(str::to_owned).collect();
                if let Some((values, name, quoted)) = rel {
                    if values.iter().any(|v| v.eq_ignore_ascii_case("next")) {
                        next = Some(target);
                    }
                    let value = values.join(" ");
                    // Unquoted, a value is one token.
                    let value = if quoted || values.len() != 1 {
                        format!("\"{value}\"")
                    } else {
                        value
                    };
                    params.insert(at.index(params.len() + 1), format!("{name}{equals}{value}"));
                }
                let mut text = format!("<{target}>");
                for param in params {
                    text.push_str(semicolon);
                    text.push_str(&param);
                }
                (text, next)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Whatever a server sends as `Link`, reading it ends, without a panic, and
        /// a target it returns came from an entry that mentions `next`. (Long runs
        /// of separators check that skipping entries stays linear.)
        #[test]
        fn link_next_survives_any_header(
            header in prop_oneof![
                any::<String>(),
                proptest::collection::vec(
                    proptest::sample::select(vec![
                        "<", ">", ";", ",", "\"", "\\", "=", " ", "rel", "REL", "next",
                        "https://a.example/b", "/x?y=1,2", "?p=2", "é", "\t",
                    ]),
                    0..40,
                )
                .prop_map(|tokens| tokens.concat()),
                proptest::collection::vec(
                    (
                        proptest::sample::select(vec!["<", ",", ",<", "<a>;", "; rel", "\"", ";=", "<a>, "]),
                        0usize..3000,
                    ),
                    1..4,
                )
                .prop_map(|runs| runs.iter().map(|(token, n)| token.repeat(*n)).collect()),
            ],
        ) {
            let base = Url::parse("https://api.example.com/v1/items?page=2")
                .unwrap_or_else(|_| unreachable!());
            if link_next(&header, &base).is_some() {
                prop_assert!(header.to_ascii_lowercase().contains("next"));
            }
        }

        /// In any list of links, with malformed entries anywhere, the first
        /// well-formed link whose `rel` holds `next` is the one followed, whatever
        /// the order, case, quoting and spacing of its parameters.
        #[test]
        fn link_next_finds_the_first_next_among_any_entries(
            entries in proptest::collection::vec(
                prop_oneof![
                    3 => well_formed_link(),
                    1 => proptest::sample::select(MALFORMED_LINKS.to_vec())
                        .prop_map(|m| (m.to_owned(), None)),
                ],
                0..8,
            ),
            separator in proptest::sample::select(vec![",", ", ", " ,  ", ",,"]),
            leading in proptest::sample::select(vec!["", " ", ", "]),
        ) {
            let base = Url::parse("https://api.example.com/v1/items?page=2")
                .unwrap_or_else(|_| unreachable!());
            let texts: Vec<&str> = entries.iter().map(|(text, _)| text.as_str()).collect();
            let header = format!("{leading}{}", texts.join(separator));
            let expected = entries
                .iter()
                .find_map(|(_, next)| *next)
                .map(|target| base.join(target).unwrap_or_else(|_| unreachable!()));
            prop_assert_eq!(link_next(&header, &base), expected, "{}", header);
        }
    }

    #[test]
    fn next_urls_that_number_pages_are_told_from_cursors_and_offsets() {
        let url = |text: &str| Url::parse(text).expect("url");
        let first = url("https://api.github.com/repos/a/b/issues?state=all&per_page=100&since=X");
        assert_eq!(
            numbered_next(
                &first,
                &url(
                    "https://api.github.com/repos/a/b/issues?per_page=100&state=all&since=X&page=2"
                )
            ),
            Some(("page".into(), 1, 2))
        );
        let third =
            url("https://api.github.com/repos/a/b/issues?page=3&per_page=100&state=all&since=X");
        let second =
            url("https://api.github.com/repos/a/b/issues?page=2&per_page=100&state=all&since=X");
        assert_eq!(numbered_next(&second, &third), Some(("page".into(), 1, 3)));
        let zero = url("https://x.test/items?p=0");
        assert_eq!(
            numbered_next(&zero, &url("https://x.test/items?p=1")),
            Some(("p".into(), 0, 1))
        );
        assert_eq!(
            numbered_next(
                &url("https://x.test/items"),
                &url("https://x.test/items?p=1")
            ),
            Some(("p".into(), 0, 1))
        );
        for next in [
            "https://x.test/items?page_info=abc",
            "https://x.test/items?offset=100",
            "https://x.test/items?after=2&limit=5",
            "https://x.test/other?page=2",
            "https://y.test/items?page=2",
            "https://x.test/items?page=7",
        ] {
            assert_eq!(
                numbered_next(&url("https://x.test/items"), &url(next)),
                None,
                "{next}"
            );
        }
        assert_eq!(
            numbered_next(
                &url("https://x.test/items?offset=100"),
                &url("https://x.test/items?offset=200")
            ),
            None
        );
        // ServiceNow's: an offset counted up by the page's records.
        let table = "https://x.service-now.com/api/now/table/incident?sysparm_limit=100";
        assert_eq!(
            offset_next(
                &url(table),
                &url(&format!("{table}&sysparm_offset=100")),
                100
            ),
            Some(("sysparm_offset".into(), 100))
        );
        assert_eq!(
            offset_next(
                &url(&format!("{table}&sysparm_offset=100")),
                &url(&format!("{table}&sysparm_offset=200")),
                100
            ),
            Some(("sysparm_offset".into(), 200))
        );
        for (next, records) in [
            ("&sysparm_offset=150", 100),
            ("&page=2", 100),
            ("&cursor=abc", 100),
        ] {
            assert_eq!(
                offset_next(&url(table), &url(&format!("{table}{next}")), records),
                None,
                "{next}"
            );
        }
        assert_eq!(
            numbered_next(
                &second,
                &url(
                    "https://api.github.com/repos/a/b/issues?page=3&per_page=50&state=all&since=X"
                )
            ),
            None
        );
    }
}

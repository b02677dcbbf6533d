//! Owns the pure parts of pagination: where the next request starts and whether the
//! answer joins up with what was read before. Offset and page-number APIs shift when
//! rows are inserted or removed before the reader's position, so their walks re-read
//! an overlap, find the last records read (the tail) in it, and take only what
//! follows; when the tail cannot be found they step back, and as a last resort read
//! the run's range again from the start (the ledger makes re-reads harmless).
//!
//! Positions are matched by anchor keys (id, `updated_at` and version), not ids
//! alone: a record that changed may have moved, and anchoring on its new place
//! would skip what it jumped over.
//! Invariant: no IO; what is tested here is exactly what the reader runs.

use std::collections::HashSet;

use url::Url;

/// How many times a walk may start over before giving up.
pub const MAX_RESCANS: u32 = 3;
/// How many times an offset walk doubles its step back before starting over.
const MAX_STEP_BACKS: u32 = 8;
/// How many times a page walk reads a pair of pages again when they may not join.
const MAX_REREADS: u32 = 4;
/// How many times in a row an offset walk may see the same window at a new offset
/// before it calls the API broken. Once can be an honest shift of exactly one stride.
const MAX_REPEATS: u32 = 2;

/// What to do with a window of ids that was just read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Take `window[from..]`, except ids already in the previous tail.
    Take { from: usize, done: bool },
    /// The tail was not found: read again from [`OffsetWalk::request_offset`].
    Refetch,
    /// Continuity is lost: the walk starts over from the beginning.
    Rescan,
}

/// Why a walk cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalkError {
    #[error(
        "the source returned the same records for two different positions ({0}); it seems to ignore the pagination parameter"
    )]
    Loop(String),
    #[error(
        "lost track of the position {MAX_RESCANS} times: the data shifts faster than it can be read with offset/page pagination; use cursor or keyset pagination if the API offers it"
    )]
    ContinuityLost,
}

/// Where the first tail id appears in a window: new records start there (tail ids
/// themselves are skipped). `None` when no tail id is in the window.
pub fn continuity(tail: &[String], window: &[&str]) -> Option<usize> {
    if tail.is_empty() {
        return Some(0);
    }
    let tail: HashSet<&str> = tail.iter().map(String::as_str).collect();
    window.iter().position(|id| tail.contains(id))
}

/// The last `overlap` ids of a window, to find again next time.
fn new_tail(window: &[&str], overlap: usize) -> Vec<String> {
    let start = window.len().saturating_sub(overlap);
    window[start..].iter().map(|s| (*s).to_owned()).collect()
}

/// An offset walk: `next` is where unread records begin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetWalk {
    pub next: u64,
    pub tail: Vec<String>,
    overlap: u64,
    step_backs: u32,
    rescans: u32,
    last_window: Option<(u64, Vec<String>)>,
    repeats: u32,
}

impl OffsetWalk {
    pub fn new(next: u64, tail: Vec<String>, overlap: u32) -> Self {
        OffsetWalk {
            next,
            tail,
            overlap: u64::from(overlap),
            step_backs: 0,
            rescans: 0,
            last_window: None,
            repeats: 0,
        }
    }

    /// Where the next request should start.
    pub fn request_offset(&self) -> u64 {
        if self.tail.is_empty() {
            return self.next;
        }
        let back = self.overlap.saturating_mul(1u64 << self.step_backs.min(40));
        self.next.saturating_sub(back)
    }

    /// Judges the window read at `start`; the walk's position moves on `Take`.
    pub fn accept(&mut self, start: u64, window: &[&str]) -> Result<Step, WalkError> {
        if !window.is_empty() {
            if let Some((last_start, last_ids)) = &self.last_window
                && *last_start != start
                && last_ids
                    .iter()
                    .map(String::as_str)
                    .eq(window.iter().copied())
            {
                self.repeats += 1;
                if self.repeats >= MAX_REPEATS {
                    return Err(WalkError::Loop(format!("offsets {last_start} and {start}")));
                }
            } else {
                self.repeats = 0;
            }
            self.last_window = Some((start, window.iter().map(|s| (*s).to_owned()).collect()));
        }
        match continuity(&self.tail, window) {
            Some(from) => {
                let fresh = window[from..]
                    .iter()
                    .filter(|id| !self.tail.iter().any(|t| t == *id))
                    .count();
                let done = fresh == 0 && window.len() as u64 <= self.overlap.max(1);
                self.next = start + window.len() as u64;
                if !window.is_empty() {
                    self.tail = new_tail(window, self.overlap as usize);
                }
                self.step_backs = 0;
                Ok(Step::Take { from, done })
            }
            None if start > 0 && self.step_backs < MAX_STEP_BACKS => {
                self.step_backs += 1;
                Ok(Step::Refetch)
            }
            None => {
                self.rescans += 1;
                if self.rescans > MAX_RESCANS {
                    return Err(WalkError::ContinuityLost);
                }
                self.next = 0;
                self.tail.clear();
                self.step_backs = 0;
                self.last_window = None;
                Ok(Step::Rescan)
            }
        }
    }
}

/// A page-number walk. Page APIs cannot start a page at an arbitrary record, so the
/// overlap is the previous page, read again right after the new one.
///
/// Two requests are two snapshots. Rows inserted before the position between them
/// are covered by the tail, and rows removed before it land in the re-read page, so
/// either kind alone never causes a skip. Removals followed by inserts can, and they
/// show as a tail that is no longer at the end of the previous page while the two
/// pages share no record: such a pair is read again. Only a removal and an insert
/// that cancel exactly between the two requests go unseen; offset, keyset and
/// cursor pagination read each page as one snapshot and do not have this limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageWalk {
    pub next: u64,
    pub tail: Vec<String>,
    first_page: u64,
    overlap: usize,
    rescans: u32,
    rereads: u32,
}

impl PageWalk {
    pub fn new(next: u64, tail: Vec<String>, first_page: u64, overlap: u32) -> Self {
        PageWalk {
            next,
            tail,
            first_page,
            overlap: overlap as usize,
            rescans: 0,
            rereads: 0,
        }
    }

    /// The previous page to read again after the next one, if continuity needs it.
    pub fn overlap_page(&self) -> Option<u64> {
        (!self.tail.is_empty() && self.next > self.first_page).then(|| self.next - 1)
    }

    /// Whether the two pages provably join up: they share a record, or the tail is
    /// still exactly at the end of the previous page (nothing moved before it).
    fn joined(&self, previous: &[&str], current: &[&str]) -> bool {
        let shared = previous.iter().any(|id| current.contains(id));
        let n = self.tail.len().min(previous.len());
        let in_place = self.tail[self.tail.len() - n..]
            .iter()
            .map(String::as_str)
            .eq(previous[previous.len() - n..].iter().copied());
        shared || in_place
    }

    /// Judges the previous page (read again, possibly empty) and the new page.
    pub fn accept(&mut self, previous: &[&str], current: &[&str]) -> Result<Step, WalkError> {
        // Once can be an honest shift of exactly one page between the two requests.
        if !current.is_empty() && previous == current {
            if self.rereads < MAX_REREADS {
                self.rereads += 1;
                return Ok(Step::Refetch);
            }
            return Err(WalkError::Loop(format!(
                "pages {} and {}",
                self.next - 1,
                self.next
            )));
        }
        let window: Vec<&str> = previous.iter().chain(current).copied().collect();
        match continuity(&self.tail, &window) {
            Some(_) if !self.joined(previous, current) && self.rereads < MAX_REREADS => {
                self.rereads += 1;
                Ok(Step::Refetch)
            }
            Some(from) => {
                self.rereads = 0;
                if !window.is_empty() {
                    self.tail = new_tail(&window, self.overlap);
                }
                self.next += 1;
                Ok(Step::Take {
                    from,
                    done: current.is_empty(),
                })
            }
            None => {
                self.rescans += 1;
                if self.rescans > MAX_RESCANS {
                    return Err(WalkError::ContinuityLost);
                }
                self.next = self.first_page;
                self.tail.clear();
                Ok(Step::Rescan)
            }
        }
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

    #[test]
    fn continuity_starts_at_the_first_tail_id() {
        let tail = vec!["b".to_owned(), "c".to_owned()];
        assert_eq!(continuity(&tail, &["a", "b", "c", "d"]), Some(1));
        // "b" moved further on: everything after the first tail id is taken.
        assert_eq!(continuity(&tail, &["c", "x", "b", "d"]), Some(0));
        assert_eq!(continuity(&tail, &["x", "y"]), None);
    }

    /// A list that changes between requests, as a live API does.
    #[derive(Debug, Clone)]
    enum Change {
        Insert(usize),
        Remove(usize),
        MoveToEnd(usize),
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            (0usize..1000).prop_map(Change::Insert),
            (0usize..1000).prop_map(Change::Remove),
            (0usize..1000).prop_map(Change::MoveToEnd),
        ]
    }

    struct Live {
        rows: Vec<String>,
        touched: HashSet<String>,
        minted: usize,
    }

    impl Live {
        fn new(n: usize) -> Self {
            Live {
                rows: (0..n).map(|i| format!("r{i}")).collect(),
                touched: HashSet::new(),
                minted: n,
            }
        }

        fn apply(&mut self, change: &Change) {
            let len = self.rows.len();
            match *change {
                Change::Insert(at) => {
                    self.minted += 1;
                    self.rows
                        .insert(at % (len + 1), format!("r{}", self.minted));
                }
                Change::Remove(at) if len > 0 => {
                    let gone = self.rows.remove(at % len);
                    self.touched.insert(gone);
                }
                Change::MoveToEnd(at) if len > 0 => {
                    // An update: the row moves and its anchor key changes.
                    let moved = self.rows.remove(at % len);
                    self.touched.insert(moved.clone());
                    self.rows.push(format!("{moved}'"));
                }
                _ => {}
            }
        }

        fn page(&self, start: usize, size: usize) -> Vec<&str> {
            self.rows
                .iter()
                .skip(start)
                .take(size)
                .map(String::as_str)
                .collect()
        }
    }

    fn untouched(initial: usize, live: &Live) -> Vec<String> {
        (0..initial)
            .map(|i| format!("r{i}"))
            .filter(|id| !live.touched.contains(id))
            .collect()
    }

    proptest! {
        /// Whatever is inserted, removed or moved between requests, an offset walk
        /// yields every row that stayed put the whole time.
        #[test]
        fn offset_walk_never_skips_a_stable_row(
            initial in 0usize..120,
            page_size in 2usize..12,
            overlap in 1u32..6,
            changes in proptest::collection::vec(proptest::collection::vec(change(), 0..4), 0..80),
        ) {
            let overlap = overlap.min(page_size as u32 - 1);
            let mut live = Live::new(initial);
            let mut walk = OffsetWalk::new(0, Vec::new(), overlap);
            let mut taken: HashSet<String> = HashSet::new();
            let mut finished = false;
            for step in 0..2000 {
                if let Some(batch) = changes.get(step) {
                    for c in batch { live.apply(c); }
                }
                let start = walk.request_offset();
                let window = live.page(start as usize, page_size);
                let tail_before = walk.tail.clone();
                match walk.accept(start, &window) {
                    Ok(Step::Take { from, done }) => {
                        for id in &window[from..] {
                            if !tail_before.iter().any(|t| t == id) {
                                taken.insert((*id).to_owned());
                            }
                        }
                        if done { finished = true; break; }
                    }
                    Ok(Step::Refetch) | Ok(Step::Rescan) => {}
                    // Giving up stops the run at its checkpoint: nothing is lost, but
                    // nothing is proven either, so such cases do not count.
                    Err(e) => prop_assume!(false, "{}", e),
                }
            }
            prop_assert!(finished, "the walk did not finish");
            for id in untouched(initial, &live) {
                prop_assert!(taken.contains(&id), "skipped {id}");
            }
        }

        /// The same for page-number walks, whose two requests per page are two
        /// snapshots: any change between pages, and between the two requests of a
        /// page either only inserts or only removals and moves (see [`PageWalk`]).
        #[test]
        fn page_walk_never_skips_a_stable_row(
            initial in 0usize..120,
            page_size in 2usize..12,
            between_requests in 0u8..3,
            changes in proptest::collection::vec(proptest::collection::vec(change(), 0..3), 0..160),
        ) {
            let kind = |c: &Change| match (between_requests, c) {
                (1, Change::Remove(at) | Change::MoveToEnd(at)) => Change::Insert(*at),
                (2, Change::Insert(at)) => Change::Remove(*at),
                _ => c.clone(),
            };
            let mut live = Live::new(initial);
            let mut walk = PageWalk::new(1, Vec::new(), 1, 3);
            let mut taken: HashSet<String> = HashSet::new();
            let mut finished = false;
            for step in 0..2000 {
                if let Some(batch) = changes.get(2 * step) {
                    for c in batch { live.apply(&kind(c)); }
                }
                let page = |live: &Live, n: u64| -> Vec<String> {
                    live.page((n as usize - 1) * page_size, page_size)
                        .into_iter()
                        .map(str::to_owned)
                        .collect()
                };
                let current = page(&live, walk.next);
                if between_requests > 0
                    && let Some(batch) = changes.get(2 * step + 1)
                {
                    for c in batch { live.apply(&kind(c)); }
                }
                let previous = walk.overlap_page().map(|n| page(&live, n)).unwrap_or_default();
                let current: Vec<&str> = current.iter().map(String::as_str).collect();
                let previous: Vec<&str> = previous.iter().map(String::as_str).collect();
                let tail_before = walk.tail.clone();
                let window: Vec<&str> = previous.iter().chain(&current).copied().collect();
                match walk.accept(&previous, &current) {
                    Ok(Step::Take { from, done }) => {
                        for id in &window[from..] {
                            if !tail_before.iter().any(|t| t == id) {
                                taken.insert((*id).to_owned());
                            }
                        }
                        if done { finished = true; break; }
                    }
                    Ok(_) => {}
                    // As for offsets: giving up loses nothing and proves nothing.
                    Err(e) => prop_assume!(false, "{}", e),
                }
            }
            prop_assert!(finished, "the walk did not finish");
            for id in untouched(initial, &live) {
                prop_assert!(taken.contains(&id), "skipped {id}");
            }
        }
    }
}

//! Owns the numbered walks of a source — `offset` and `page` pagination —
//! on the reader: each request's window settled, read against the tail the
//! walk last stood on (`pagination.rs` decides), the page taken past it, or
//! read again from where a shift shows.

use super::pagination::{OffsetWalk, PageWalk, Step, Ties};
use super::{Cursor, Extracted, Page, Reader, SourceError};
use crate::config::{OFFSET_IN_PARAMS, Pagination};
use crate::stop::Stop;
use url::Url;

impl Reader<'_> {
    /// The next page of an offset walk on `param` — or in the configured
    /// parameters that hold `{offset}` — counted from `first`; `linked` when
    /// the walk was found in next URLs that count an offset, so that its
    /// cursor says on which parameter.
    pub(super) async fn offset_page(
        &mut self,
        param: &str,
        first: u64,
        overlap: u32,
        linked: bool,
        stop: &Stop,
    ) -> Result<Page, SourceError> {
        let (next, tail) = match &self.cursor {
            Cursor::Offset { next, tail } | Cursor::LinkedOffset { next, tail, .. } => {
                (*next, tail.clone())
            }
            _ => (0, Vec::new()),
        };
        let mut walk = self.offset_walk.take().unwrap_or_else(|| {
            let page_size = self
                .spec
                .page_size_param
                .is_some()
                .then_some(self.spec.page_size);
            OffsetWalk::new(next, tail, overlap, page_size)
        });
        let url = self.list_url()?;
        let mut requests = 0;
        // See `numbered_page`: records from windows read again go with the page.
        let mut discarded = Vec::new();
        loop {
            let start = walk.request_offset();
            let mut query = self.base_query();
            let position = (start + first).to_string();
            let mut written = false;
            for (_, value) in &mut query {
                if value.contains(OFFSET_IN_PARAMS) {
                    *value = value.replace(OFFSET_IN_PARAMS, &position);
                    written = true;
                }
            }
            if !written {
                query.push((param.to_owned(), position));
            }
            let (window, last) = self.window(&url, query, start > 0, stop).await?;
            requests += 1;
            let keys: Vec<String> = window.iter().map(anchor_key).collect();
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let tail_before = walk.tail.clone();
            match walk.accept(start, &keys)? {
                Step::Take { from, done } => {
                    let done = done || last;
                    tie_warning("offset", start, &mut walk.ties);
                    let mut records = without(window, from, &tail_before);
                    with_reread(&mut records, std::mem::take(&mut discarded));
                    let cursor_after = offset_cursor(&walk, done, linked, param);
                    self.offset_walk = Some(walk);
                    return Ok(self.page(records, cursor_after, requests));
                }
                Step::Refetch => discarded.extend(window),
                Step::Rescan => {
                    rescan_warning(self.api.sync(), "offset", start);
                    // The checkpoint goes back to the start with the walk: a
                    // run resumed after it must read again what the walk
                    // may have missed.
                    let cursor_after = offset_cursor(&walk, false, linked, param);
                    self.offset_walk = Some(walk);
                    return Ok(self.page(std::mem::take(&mut discarded), cursor_after, requests));
                }
            }
        }
    }

    /// The next page of a page-number walk on `param`; `linked` when the
    /// walk was found in next URLs that number their pages, so that its
    /// cursor says on which parameter. With `by_offset` (the page size),
    /// `param` takes the offset of the page's first record instead of the
    /// page's number.
    pub(super) async fn numbered_page(
        &mut self,
        param: &str,
        first_page: u64,
        overlap: u32,
        by_offset: Option<u64>,
        linked: bool,
        stop: &Stop,
    ) -> Result<Page, SourceError> {
        let (next, tail) = match &self.cursor {
            Cursor::Page { next, tail } | Cursor::LinkedPage { next, tail, .. } => {
                (*next, tail.clone())
            }
            _ => (first_page, Vec::new()),
        };
        let mut walk = self
            .page_walk
            .take()
            .unwrap_or_else(|| PageWalk::new(next, tail, first_page, overlap));
        let url = self.list_url()?;
        let mut requests = 0;
        // A read that is done again still showed real records: a lagging replica on
        // the second read must not hide a newer version the first one returned.
        let mut discarded = Vec::new();
        loop {
            let fetch_page = async |number: u64| {
                let mut query = self.base_query();
                let position = match by_offset {
                    Some(size) => number.saturating_sub(first_page) * size,
                    None => number,
                };
                query.push((param.to_owned(), position.to_string()));
                self.window(&url, query, number > first_page, stop).await
            };
            // The new page first, then the previous one again: a shift between the
            // two shows up as a moved tail, never as a silent skip.
            let (current, last) = fetch_page(walk.next).await?;
            let previous = match walk.overlap_page() {
                Some(number) => fetch_page(number).await?.0,
                None => Vec::new(),
            };
            requests += if previous.is_empty() { 1 } else { 2 };
            let previous_keys: Vec<String> = previous.iter().map(anchor_key).collect();
            let current_keys: Vec<String> = current.iter().map(anchor_key).collect();
            let previous_keys: Vec<&str> = previous_keys.iter().map(String::as_str).collect();
            let current_keys: Vec<&str> = current_keys.iter().map(String::as_str).collect();
            let tail_before = walk.tail.clone();
            let number = walk.next;
            match walk.accept(&previous_keys, &current_keys)? {
                Step::Take { from, done } => {
                    let done = done || last;
                    tie_warning("page", number, &mut walk.ties);
                    let window: Vec<Extracted> = previous.into_iter().chain(current).collect();
                    let mut records = without(window, from, &tail_before);
                    with_reread(&mut records, std::mem::take(&mut discarded));
                    let cursor_after = page_cursor(&walk, done, linked, param, first_page);
                    self.page_walk = Some(walk);
                    return Ok(self.page(records, cursor_after, requests));
                }
                Step::Refetch => {
                    discarded.extend(current);
                    crate::obs::PaginationRescan {
                        sync: self.api.sync(),
                        style: "page",
                        position: number,
                        from_start: false,
                    }
                    .emit();
                }
                Step::Rescan => {
                    rescan_warning(self.api.sync(), "page", number);
                    // As for offsets: the checkpoint goes back with the walk.
                    let cursor_after = page_cursor(&walk, false, linked, param, first_page);
                    self.page_walk = Some(walk);
                    return Ok(self.page(std::mem::take(&mut discarded), cursor_after, requests));
                }
            }
        }
    }
}

impl Reader<'_> {
    /// The records of one request of a walk, settled, and whether the answer
    /// says no page follows (`more_path`). A request `past_first` position
    /// that the API refuses with one of `end_of_list_errors` in its answer
    /// (WordPress's `rest_post_invalid_page_number`) holds none: it asked
    /// past the end of a list that ends on a full page, or shrank since a
    /// checkpoint was kept.
    async fn window(
        &self,
        url: &Url,
        query: Vec<(String, String)>,
        past_first: bool,
        stop: &Stop,
    ) -> Result<(Vec<Extracted>, bool), SourceError> {
        let body = match self.fetch(url.clone(), query.clone(), stop).await {
            Ok((body, _)) => body,
            Err(SourceError::Refused { body, .. })
                if past_first
                    && self
                        .spec
                        .end_of_list_errors
                        .iter()
                        .any(|word| body.contains(word.as_str())) =>
            {
                return Ok((Vec::new(), true));
            }
            Err(SourceError::Refused { url, status, body }) if past_first => {
                return Err(SourceError::RefusedPastFirst { url, status, body });
            }
            Err(e) => return Err(e),
        };
        let more_path = match &self.spec.pagination {
            Pagination::Offset { more_path, .. } | Pagination::Page { more_path, .. } => {
                more_path.as_ref()
            }
            _ => None,
        };
        let last = !super::follows(more_path, None, &body);
        let records = self.records(body, url)?;
        let records = self
            .settle(records, url, query, self.bound_floor(), stop)
            .await?;
        Ok((records, last))
    }
}

/// The page's records with the copies of reads done again, each copy once:
/// one alike in id, `updated_at` and version is the same record read twice
/// (a record that moved between the two requests of a page step is in both
/// pages), and would count as read twice and as a stale copy once.
fn with_reread(records: &mut Vec<Extracted>, reread: Vec<Extracted>) {
    let mut held = std::collections::HashSet::new();
    let page = std::mem::take(records);
    records.extend(
        page.into_iter()
            .chain(reread)
            .filter(|r| held.insert(anchor_key(r))),
    );
}

/// `window[from..]` without the records already read (the tail).
fn without(window: Vec<Extracted>, from: usize, tail: &[String]) -> Vec<Extracted> {
    window
        .into_iter()
        .skip(from)
        .filter(|r| {
            let key = anchor_key(r);
            !tail.contains(&key)
        })
        .collect()
}

/// Identifies a record at one version, so a record that changed (and may have
/// moved) is never taken as proof of where the reader stood.
pub(super) fn anchor_key(record: &Extracted) -> String {
    match record {
        Extracted::Record(r) => format!(
            "{}@{}#{}",
            r.id(),
            r.updated_at().as_microsecond(),
            r.version.map_or(String::new(), |v| v.to_string())
        ),
        Extracted::Invalid { id, body, .. } => {
            format!(
                "{id}!{}",
                &blake3::hash(body.to_string().as_bytes()).to_hex()[..12]
            )
        }
    }
}

/// Where an offset walk stands, as its checkpoint keeps it: after a start
/// over, at the range's start with no tail.
fn offset_cursor(walk: &OffsetWalk, done: bool, linked: bool, param: &str) -> Cursor {
    let (next, tail) = (walk.next, walk.tail.clone());
    match (done, linked) {
        (true, _) => Cursor::End,
        (false, false) => Cursor::Offset { next, tail },
        (false, true) => Cursor::LinkedOffset {
            param: param.to_owned(),
            next,
            tail,
        },
    }
}

/// Where a page walk stands, as its checkpoint keeps it.
fn page_cursor(walk: &PageWalk, done: bool, linked: bool, param: &str, first_page: u64) -> Cursor {
    let (next, tail) = (walk.next, walk.tail.clone());
    match (done, linked) {
        (true, _) => Cursor::End,
        (false, false) => Cursor::Page { next, tail },
        (false, true) => Cursor::LinkedPage {
            param: param.to_owned(),
            first_page,
            next,
            tail,
        },
    }
}

fn tie_warning(style: &'static str, position: u64, ties: &mut Ties) {
    if ties.news() {
        crate::obs::UnstableTies { style, position }.emit();
    }
}

fn rescan_warning(sync: &str, style: &'static str, position: u64) {
    crate::obs::PaginationRescan {
        sync,
        style,
        position,
        from_start: true,
    }
    .emit();
}

//! Owns reading the source: turning a cursor into the next request, and an answer
//! into records plus the cursor after them, for every pagination style. Records past
//! the run's watermark are dropped here; reading stops at the watermark when the API
//! returns records in order.
//! Invariant: never sees checkpoints, the ledger or the destination; it is handed a
//! window and a cursor and hands back pages.

pub mod bounds;
mod cursors;
mod error;
pub mod extract;
mod fetching;
pub mod lag;
mod links;
pub mod pagination;
pub mod probe;
mod requests;
mod walks;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use crate::config::{AuthSpec, KeyPlacement, Pagination, SourceSpec};
use crate::http::{Api, HttpError, Reply, Request, redact};
use crate::obs::RetryClass;
use crate::policy::{Class, Failed, GaveUp, retry};
use crate::record::{FieldPath, RecordKey};
use crate::stop::Stop;
pub use error::SourceError;
pub use extract::Extracted;
use extract::{extract, parse_time, records_array};
use fetching::{Ahead, Fetching, Follow};
use pagination::{OffsetWalk, PageWalk};
use requests::{PageRequests, page_request};

/// What one run is responsible for: records with `lower <= updated_at <= watermark`,
/// both bounds inclusive ([`bounds`] writes them so that a strict API agrees).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub lower: Option<Timestamp>,
    pub watermark: Timestamp,
}

/// The position inside a run, stored in the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cursor {
    Start,
    Token {
        token: String,
    },
    NextUrl {
        url: String,
    },
    Keyset {
        updated_at: Value,
        id: String,
        id_is_number: bool,
    },
    Offset {
        next: u64,
        tail: Vec<String>,
    },
    Page {
        next: u64,
        tail: Vec<String>,
    },
    /// A page-number walk found in next URLs that number their pages
    /// ([`links::numbered_next`]), on the parameter they count with.
    LinkedPage {
        param: String,
        first_page: u64,
        next: u64,
        tail: Vec<String>,
    },
    /// An offset walk found in next URLs that count an offset by each
    /// page's records ([`links::offset_next`]), on that parameter.
    LinkedOffset {
        param: String,
        next: u64,
        tail: Vec<String>,
    },
    /// Nothing left to read.
    End,
}

/// One page as the engine sees it.
#[derive(Debug)]
pub struct Page {
    /// In source order, without records past the watermark.
    pub records: Vec<Extracted>,
    pub beyond_watermark: u64,
    /// Where reading resumes once every record of this page is resolved.
    pub cursor_after: Cursor,
    pub requests: u32,
}

/// How often a request whose answer holds a lagging copy is read again, and the
/// wait before the first re-read, doubled before each next one: about 3 s in
/// all, the time a replica of a search index typically takes to catch up.
const REREADS: u32 = 4;
const FIRST_REREAD_WAIT: Duration = Duration::from_millis(200);

/// Reads one run's pages in order.
#[derive(Debug)]
pub struct Reader<'a> {
    api: &'a Api,
    spec: &'a SourceSpec,
    window: Window,
    cursor: Cursor,
    seen: HashSet<String>,
    offset_walk: Option<OffsetWalk>,
    page_walk: Option<PageWalk>,
    /// Off once the API has shown that it answers with records before the bound it
    /// was sent, whatever the replica: reading again would only cost time.
    lag_checks: AtomicBool,
    /// Every answer, as `probe` shows them; `None` when not asked for.
    trace: Option<std::sync::Mutex<Vec<Fetched>>>,
    /// Where the requests go when the next page's request goes ahead
    /// ([`Reader::reading_ahead`]).
    read_ahead: Option<Fetching>,
    /// The request sent ahead, for the page after the last one read.
    ahead: Option<Ahead>,
    /// Set until the first page is read, when the reader starts at a cursor
    /// token or next URL a checkpoint kept.
    resumed_at_token: bool,
    /// What the source's page requests carry beside a GET's query.
    shape: Option<Arc<PageRequests>>,
}

/// One request of a traced reader and the answer's body.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub method: reqwest::Method,
    /// The URL, without credentials.
    pub url: String,
    /// The query sent, without the configured `params` that hold a
    /// `${VAR}` (they may hold secrets).
    pub query: Vec<(String, String)>,
    /// The JSON body sent with a POST: the configured `body`, which takes no
    /// `${VAR}`, with the page's parameters written in.
    pub sent: Option<Value>,
    pub body: Value,
}

/// A request as messages name it: its method and its URL without credentials.
fn shown(request: &Request) -> String {
    format!("{} {}", request.method, redact(&request.url))
}

/// The answer sent back, or what stops the run: a refusal is a bad response.
fn checked(request: &Request, sent: Result<Reply, HttpError>) -> Result<Reply, SourceError> {
    sent.map_err(|e| match e {
        HttpError::Rejected { status, body } => SourceError::Refused {
            url: shown(request),
            status,
            body,
        },
        e => SourceError::Http(e),
    })
}

/// The next page's token a value says: a string that is not empty, or a number.
/// Whether the answer says there is a page after it: always, unless
/// `more_path` is given and holds anything but `true` there, or `end_path`
/// is given and holds `true` there.
fn follows(more_path: Option<&FieldPath>, end_path: Option<&FieldPath>, body: &Value) -> bool {
    let truth = |path: &FieldPath| path.get(body) == Some(&Value::Bool(true));
    more_path.is_none_or(truth) && !end_path.is_some_and(truth)
}

fn token_of(value: Option<&Value>) -> Option<String> {
    match value {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// The next page's token, read from the answer's text without parsing it
/// (`rawjson`); `None` where that is not sure, or says there is none (the
/// parsed answer then says it).
/// Whether the answer's text says a page follows it, as [`follows`] would
/// of the parsed answer (`rawjson`); `None` where the scan is not sure.
pub(super) fn scanned_follows(
    body: &[u8],
    more_path: Option<&FieldPath>,
    end_path: Option<&FieldPath>,
) -> Option<bool> {
    let truth =
        |path: &FieldPath| crate::rawjson::find(body, path.segments()).map(|text| text == b"true");
    let more = more_path.map_or(Some(true), truth)?;
    let end = end_path.map_or(Some(false), truth)?;
    Some(more && !end)
}

pub(super) fn scanned_token(body: &[u8], path: &FieldPath) -> Option<String> {
    let text = crate::rawjson::find(body, path.segments())?;
    token_of(serde_json::from_slice::<Value>(text).ok().as_ref())
}

impl<'a> Reader<'a> {
    pub fn new(api: &'a Api, spec: &'a SourceSpec, window: Window, cursor: Cursor) -> Self {
        let resumed_at_token = matches!(cursor, Cursor::Token { .. } | Cursor::NextUrl { .. });
        Reader {
            api,
            spec,
            window,
            cursor,
            seen: HashSet::new(),
            offset_walk: None,
            page_walk: None,
            lag_checks: AtomicBool::new(true),
            trace: None,
            read_ahead: None,
            ahead: None,
            resumed_at_token,
            shape: PageRequests::new(spec, window).map(Arc::new),
        }
    }

    /// Sends the request for the next page as soon as a page says where that
    /// is (a cursor token, a next URL), before its records are read: `api` is
    /// the reader's own API, owned, and `runtime` the one its requests go on,
    /// driven by a thread other than the reader's (see [`Fetching`]).
    pub fn reading_ahead(mut self, api: Arc<Api>, runtime: tokio::runtime::Handle) -> Self {
        self.read_ahead = Some(Fetching::new(api, runtime, self.shape.clone()));
        self
    }

    /// A URL this reader asks for pages at, as messages name it, with the
    /// method its page requests go with.
    fn shown_url(&self, url: &Url) -> String {
        let method = match self.spec.body {
            Some(_) => "POST",
            None => "GET",
        };
        format!("{method} {}", redact(url))
    }

    /// Keeps every answer, for [`Reader::take_trace`].
    pub fn traced(mut self) -> Self {
        self.trace = Some(std::sync::Mutex::new(Vec::new()));
        self
    }

    /// The answers fetched since the last call.
    pub fn take_trace(&mut self) -> Vec<Fetched> {
        match &mut self.trace {
            Some(trace) => std::mem::take(trace.get_mut().unwrap_or_else(|e| e.into_inner())),
            None => Vec::new(),
        }
    }

    /// The next page, or `None` when the run's range has been read.
    pub async fn next_page(&mut self, stop: &Stop) -> Result<Option<Page>, SourceError> {
        let resumed = std::mem::take(&mut self.resumed_at_token);
        let given = matches!(self.cursor, Cursor::Token { .. } | Cursor::NextUrl { .. });
        match self.read_page(stop).await {
            // A cursor token or next URL kept in a checkpoint may expire
            // (Salesforce's query locators after 15 minutes, Asana's offsets):
            // refused at once, the run reads its range again from the start,
            // where what it wrote is skipped, rather than fail every resume.
            Err(SourceError::Refused { status, body, .. }) if resumed => {
                crate::obs::ResumedPositionRefused {
                    sync: self.api.sync(),
                    status,
                    body: &body,
                }
                .emit();
                self.cursor = Cursor::Start;
                self.seen.clear();
                self.ahead = None;
                self.read_page(stop).await
            }
            Err(SourceError::Refused { url, status, body }) if given => {
                Err(SourceError::RefusedPosition { url, status, body })
            }
            read => read,
        }
    }

    async fn read_page(&mut self, stop: &Stop) -> Result<Option<Page>, SourceError> {
        if self.cursor == Cursor::End {
            return Ok(None);
        }
        let mut page = match self.spec.pagination.clone() {
            Pagination::Cursor {
                token_param,
                token_field: Some(field),
                more_path,
                end_path,
                ..
            } => {
                self.after_last_record(&token_param, &field, more_path, end_path, stop)
                    .await?
            }
            Pagination::Cursor {
                token_path,
                token_param,
                more_path,
                end_path,
                ..
            } => {
                self.token_page(&token_path, &token_param, more_path, end_path, stop)
                    .await?
            }
            Pagination::NextUrl { .. } if matches!(self.cursor, Cursor::LinkedOffset { .. }) => {
                let Cursor::LinkedOffset { param, .. } = self.cursor.clone() else {
                    unreachable!("matched above")
                };
                let overlap = linked_overlap(self.spec);
                self.offset_page(&param, 0, overlap, true, stop).await?
            }
            Pagination::NextUrl { .. } if matches!(self.cursor, Cursor::LinkedPage { .. }) => {
                let Cursor::LinkedPage {
                    param, first_page, ..
                } = self.cursor.clone()
                else {
                    unreachable!("matched above")
                };
                let overlap = linked_overlap(self.spec);
                self.numbered_page(&param, first_page, overlap, None, true, stop)
                    .await?
            }
            Pagination::NextUrl { from } => self.next_url_page(from, stop).await?,
            Pagination::Keyset {
                updated_param,
                id_param,
            } => {
                let mut query = self.base_query();
                let current = match &self.cursor {
                    Cursor::Keyset {
                        updated_at,
                        id,
                        id_is_number,
                    } => {
                        query.push((updated_param, value_text(updated_at)));
                        query.push((id_param, id.clone()));
                        parse_time(updated_at, &self.spec.time_format)
                            .ok()
                            .map(|t| RecordKey {
                                updated_at: t,
                                id: id.clone(),
                                id_is_number: *id_is_number,
                            })
                    }
                    _ => {
                        if let Some(lower) = self.window.lower {
                            query.push((updated_param, bounds::lower(lower, self.spec)));
                        }
                        None
                    }
                };
                let floor = match &current {
                    Some(anchor) => Some(anchor.updated_at),
                    None => self
                        .window
                        .lower
                        .map(|at| bounds::lower_sent(at, self.spec)),
                };
                let url = self.list_url()?;
                let (body, _) = self.fetch(url.clone(), query.clone(), stop).await?;
                let records = self.records(body, &url)?;
                // Nothing after the anchor is the API ignoring it, a loop: a
                // replica lags record by record, and is looked for only after.
                if let (Some(current), Some(last)) = (&current, newest(&records))
                    && !last.key.is_after(current)
                {
                    return Err(SourceError::Loop {
                        what: "page",
                        detail: format!("nothing after ({}, {})", current.updated_at, current.id),
                    });
                }
                // Only later copies replace earlier ones: the newest record stays
                // after the anchor.
                let records = self.settle(records, &url, query, floor, stop).await?;
                let cursor_after = match (records.is_empty(), newest(&records)) {
                    (true, _) => Cursor::End,
                    (false, None) => {
                        return Err(SourceError::KeysetStalled {
                            url: self.shown_url(&url),
                        });
                    }
                    (false, Some(last)) => Cursor::Keyset {
                        updated_at: last.updated_at_raw.clone(),
                        id: last.key.id.clone(),
                        id_is_number: last.key.id_is_number,
                    },
                };
                self.page(records, cursor_after, 1)
            }
            Pagination::Offset {
                offset_param,
                first_offset,
                overlap,
                ..
            } => {
                self.offset_page(&offset_param, first_offset, overlap, false, stop)
                    .await?
            }
            Pagination::Page {
                page_param,
                first_page,
                overlap,
                by_offset,
                ..
            } => {
                let by_offset = by_offset.then_some(u64::from(self.spec.page_size));
                self.numbered_page(&page_param, first_page, overlap, by_offset, false, stop)
                    .await?
            }
        };
        if page.beyond_watermark > 0 && self.spec.sorted {
            page.cursor_after = Cursor::End;
            // The request sent ahead is not wanted: dropped, it is aborted.
            self.ahead = None;
        }
        self.cursor = page.cursor_after.clone();
        Ok(Some(page))
    }

    /// Drops records past the watermark.
    fn page(&self, records: Vec<Extracted>, cursor_after: Cursor, requests: u32) -> Page {
        let total = records.len();
        let records: Vec<Extracted> = records
            .into_iter()
            .filter(|r| match r {
                Extracted::Record(r) => r.updated_at() <= self.window.watermark,
                Extracted::Invalid { .. } => true,
            })
            .collect();
        Page {
            beyond_watermark: (total - records.len()) as u64,
            records,
            cursor_after,
            requests,
        }
    }

    fn base_query(&self) -> Vec<(String, String)> {
        let mut query: Vec<(String, String)> = self
            .spec
            .params
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    bounds::fill_params(v.expose(), self.spec, self.window),
                )
            })
            .collect();
        if let Some(param) = &self.spec.page_size_param {
            query.push((param.clone(), self.spec.page_size.to_string()));
        }
        query.extend(bounds::window_query(self.spec, self.window));
        query
    }

    /// The earliest record an answer to a request built from [`Reader::base_query`]
    /// may hold, when that query carries the window's lower bound.
    fn bound_floor(&self) -> Option<Timestamp> {
        if !self.spec.sends_lower_bound() {
            return None;
        }
        self.window
            .lower
            .map(|at| bounds::lower_sent(at, self.spec))
    }

    /// Reads the request again while its answer holds copies a consistent source
    /// could not have served (see [`lag`]), keeping the first answer and taking
    /// only the later copies of those records. The API's own order and its
    /// pagination (tokens, next URLs, the walk of numbered pages) stay those of
    /// the first answer. A copy still suspect after the last re-read stops the
    /// run where a keyset vouches for the floor; elsewhere the API may compare
    /// its bound coarsely or not at all, so it is taken as the API's answer (the
    /// ledger deduplicates it) and not checked again in this run.
    async fn settle(
        &self,
        mut records: Vec<Extracted>,
        url: &Url,
        query: Vec<(String, String)>,
        floor: Option<Timestamp>,
        stop: &Stop,
    ) -> Result<Vec<Extracted>, SourceError> {
        if !self.lag_checks.load(Ordering::Relaxed) {
            return Ok(records);
        }
        let sorted = self.spec.sorted;
        let mut open = lag::suspects(&records, floor, sorted);
        if open.is_empty() {
            return Ok(records);
        }
        let lagging = open.len();
        let mut wait = FIRST_REREAD_WAIT;
        let mut reads = 1;
        while !open.is_empty() && reads <= REREADS {
            stop.sleep(wait)
                .await
                .map_err(|r| SourceError::Http(HttpError::Stopped(r)))?;
            wait *= 2;
            let (body, _) = self.fetch(url.clone(), query.clone(), stop).await?;
            let again = self.records(body, url)?;
            open = lag::merge(&mut records, &open, again, floor, sorted);
            reads += 1;
        }
        let Some(&first) = open.first() else {
            crate::obs::LaggingCopies {
                sync: self.api.sync(),
                copies: lagging,
                reads,
            }
            .emit();
            return Ok(records);
        };
        let stamp = match &records[first] {
            Extracted::Record(r) => r.updated_at(),
            Extracted::Invalid { .. } => Timestamp::UNIX_EPOCH,
        };
        let id = records[first].id().to_owned();
        if matches!(self.spec.pagination, Pagination::Keyset { .. }) {
            let below = floor.filter(|f| f.checked_sub(lag::SLACK).is_ok_and(|f| stamp < f));
            return Err(SourceError::Lagging {
                url: self.shown_url(url),
                id,
                stamp,
                floor: below.map_or_else(|| "the record ahead of it".to_owned(), |f| f.to_string()),
                reads,
            });
        }
        self.lag_checks.store(false, Ordering::Relaxed);
        crate::obs::BoundNotHonored {
            sync: self.api.sync(),
            source_id: &id,
            stamp,
            floor,
            reads,
        }
        .emit();
        Ok(records)
    }

    fn list_url(&self) -> Result<Url, SourceError> {
        self.api
            .url(&self.spec.path)
            .map_err(|e| SourceError::BadResponse {
                url: self.spec.path.clone(),
                detail: format!("cannot build the request URL: {e}"),
            })
    }

    /// Sends, unless [`send_ahead`](Self::send_ahead) already sent it, the
    /// request for a page; its answer, not yet parsed, and the next page's
    /// token when the answer's own task found it (and sent that request).
    async fn page_reply(
        &mut self,
        url: Url,
        query: Vec<(String, String)>,
        stop: &Stop,
    ) -> Result<(Request, Reply, Option<String>), SourceError> {
        let request = page_request(self.shape.as_deref(), url.clone(), query.clone());
        let mut token = None;
        let sent = match self.ahead.take() {
            Some(ahead) if ahead.url == url && ahead.query == query => {
                match ahead.reply.await {
                    Ok((sent, next)) => {
                        if let Some((next_token, next)) = next {
                            next.may_follow.store(true, Ordering::Release);
                            self.ahead = Some(next);
                            token = Some(next_token);
                        }
                        sent
                    }
                    // A task that panicked answered nothing: the request goes again.
                    Err(_) => self.send(&request, stop).await,
                }
            }
            _ => self.send(&request, stop).await,
        };
        let reply = checked(&request, sent)?;
        Ok((request, reply, token))
    }

    /// [`page_reply`](Self::page_reply), parsed.
    async fn fetch_page(
        &mut self,
        url: Url,
        query: Vec<(String, String)>,
        stop: &Stop,
    ) -> Result<(Value, reqwest::header::HeaderMap), SourceError> {
        let (request, reply, _) = self.page_reply(url, query, stop).await?;
        self.parsed(&request, reply, stop).await
    }

    /// The cursor after a page whose next token is `token`, refused when the
    /// source gave that token before (a loop); the request for that page
    /// goes ahead.
    fn token_cursor(
        &mut self,
        token: String,
        token_path: &FieldPath,
        token_param: &str,
        url: &Url,
        stop: &Stop,
    ) -> Result<Cursor, SourceError> {
        if !self.seen.insert(token.clone()) {
            return Err(SourceError::Loop {
                what: "cursor token",
                detail: abbreviate(&token),
            });
        }
        let (more_path, end_path) = match &self.spec.pagination {
            Pagination::Cursor {
                more_path,
                end_path,
                ..
            } => (more_path.clone(), end_path.clone()),
            _ => (None, None),
        };
        let follow = Follow {
            url: url.clone(),
            query: self.base_query(),
            token_path: token_path.clone(),
            token_param: token_param.to_owned(),
            more_path,
            end_path,
        };
        let mut next = follow.query.clone();
        next.push((token_param.to_owned(), token.clone()));
        self.send_ahead(url.clone(), next, Some(follow), stop);
        Ok(Cursor::Token { token })
    }

    /// Sends the request for the page after the one being read, unless the
    /// answer before it sent it already, when the reader reads ahead: the
    /// answer is on its way while this page is parsed and its records read.
    /// Against a source taking 20 ms a page (500 records), a run sent its next
    /// request a median 3.3–3.5 ms after an answer left the source, a bare
    /// loop that only parses pages 1.4–1.6 ms.
    fn send_ahead(
        &mut self,
        url: Url,
        query: Vec<(String, String)>,
        follow: Option<Follow>,
        stop: &Stop,
    ) {
        let Some(fetching) = &self.read_ahead else {
            return;
        };
        if self
            .ahead
            .as_ref()
            .is_some_and(|ahead| ahead.url == url && ahead.query == query)
        {
            return;
        }
        self.ahead = Some(fetching.ahead(url, query, follow, true, stop));
    }

    /// Sends a request, on the fetching runtime when the reader reads ahead.
    async fn send(&self, request: &Request, stop: &Stop) -> Result<Reply, HttpError> {
        match &self.read_ahead {
            Some(fetching) => match fetching.send(request.clone(), stop).await {
                Ok(sent) => sent,
                // A task that panicked answered nothing: the request goes again.
                Err(_) => self.api.send(request, stop).await,
            },
            None => self.api.send(request, stop).await,
        }
    }

    async fn fetch(
        &self,
        url: Url,
        query: Vec<(String, String)>,
        stop: &Stop,
    ) -> Result<(Value, reqwest::header::HeaderMap), SourceError> {
        let request = page_request(self.shape.as_deref(), url, query);
        let sent = self.send(&request, stop).await;
        let reply = checked(&request, sent)?;
        self.parsed(&request, reply, stop).await
    }

    /// The body and headers of `reply`, the answer to `request`. A 2xx that
    /// is not JSON (a proxy's or CDN's page, a body cut short) is asked for
    /// again through the one retry loop, as a 503 would be: the API behind
    /// it is usually well a moment later.
    async fn parsed(
        &self,
        request: &Request,
        reply: Reply,
        stop: &Stop,
    ) -> Result<(Value, reqwest::header::HeaderMap), SourceError> {
        let mut held = Some(reply);
        let parsed = retry(
            self.api.retry_policy(),
            stop,
            request.idempotent,
            |_| {
                let held = held.take();
                async move {
                    let reply = match held {
                        Some(reply) => reply,
                        None => checked(request, self.send(request, stop).await)
                            .map_err(|e| Failed::new(e, Class::Fatal))?,
                    };
                    self.parse(request, reply).map_err(|e| {
                        Failed::new(
                            e,
                            Class::Transient {
                                outcome_known: true,
                            },
                        )
                    })
                }
            },
            |failed, _| {
                self.api.count_retry(
                    RetryClass::Other,
                    &shown(request),
                    &failed.error.to_string(),
                );
            },
        )
        .await;
        match parsed {
            Ok((parsed, _)) => Ok(parsed),
            Err(GaveUp::Final { error, .. } | GaveUp::Unknown { error, .. }) => Err(error),
            Err(GaveUp::Exhausted { last, attempts, .. }) => Err(match last {
                SourceError::BadResponse { url, detail } => SourceError::BadResponse {
                    url,
                    detail: format!("{detail} (asked {attempts} times)"),
                },
                other => other,
            }),
            Err(GaveUp::Stopped(reason)) => Err(SourceError::Http(HttpError::Stopped(reason))),
        }
    }

    /// The body and headers of the answer to `request`.
    fn parse(
        &self,
        request: &Request,
        reply: Reply,
    ) -> Result<(Value, reqwest::header::HeaderMap), SourceError> {
        // A page's answer is never empty: one cut off before its first byte
        // is asked for again as any answer that is not JSON.
        if reply.body.trim_ascii().is_empty() {
            return Err(SourceError::BadResponse {
                url: shown(request),
                detail: format!("an empty answer (HTTP {})", reply.status.as_u16()),
            });
        }
        let body = reply.json().map_err(|e| {
            let kind = reply
                .headers
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("no content type")
                .to_owned();
            SourceError::BadResponse {
                url: shown(request),
                detail: format!(
                    "not JSON ({kind}; {e}): {}",
                    crate::http::snippet(&reply.body)
                ),
            }
        })?;
        if let Some(trace) = &self.trace {
            // A configured parameter whose value comes from the environment
            // may hold a secret; the others are shown as sent.
            let secret: HashSet<&str> = self
                .spec
                .params_from_env
                .iter()
                .map(String::as_str)
                .collect();
            let fetched = Fetched {
                method: request.method.clone(),
                url: redact(&request.url),
                query: request
                    .query
                    .iter()
                    .filter(|(k, _)| !secret.contains(k.as_str()))
                    .cloned()
                    .collect(),
                sent: request
                    .body
                    .as_deref()
                    .and_then(|b| serde_json::from_slice(b).ok()),
                body: body.clone(),
            };
            trace
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(fetched);
        }
        Ok((body, reply.headers))
    }

    fn records(&self, body: Value, url: &Url) -> Result<Vec<Extracted>, SourceError> {
        let raw = records_array(body, &self.spec.records_path).map_err(|detail| {
            SourceError::BadResponse {
                url: self.shown_url(url),
                detail,
            }
        })?;
        Ok(raw.into_iter().map(|r| extract(r, self.spec)).collect())
    }

    /// Keeps the next URL on the configured host and out of the state store's way:
    /// an API key passed in the query is removed (auth adds it again).
    fn checked_next_url(&self, mut next: Url) -> Result<String, SourceError> {
        let base = self.api.base_url();
        if next.origin() != base.origin() {
            return Err(SourceError::ForeignNextUrl {
                host: next.host_str().unwrap_or("?").to_owned(),
            });
        }
        if let AuthSpec::ApiKey {
            placement: KeyPlacement::Query(param),
            ..
        } = &self.spec.http.auth
        {
            let kept: Vec<(String, String)> = next
                .query_pairs()
                .filter(|(k, _)| k != param)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            next.query_pairs_mut().clear().extend_pairs(kept);
        }
        Ok(next.to_string())
    }
}

/// The record latest in source order, where a keyset continues from.
fn newest(records: &[Extracted]) -> Option<&crate::record::SourceRecord> {
    records
        .iter()
        .filter_map(|r| match r {
            Extracted::Record(r) => Some(r),
            Extracted::Invalid { .. } => None,
        })
        .max_by(|a, b| a.key.cmp(&b.key))
}

/// The records a walk over next URLs that number their pages reads again
/// from the page before: a page-number walk's default, within a page.
fn linked_overlap(spec: &SourceSpec) -> u32 {
    spec.page_size.saturating_sub(1).clamp(1, 10)
}

fn parse_url(text: &str) -> Result<Url, SourceError> {
    Url::parse(text).map_err(|e| SourceError::BadResponse {
        url: "next URL".into(),
        detail: format!("not a URL ({e})"),
    })
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn abbreviate(token: &str) -> String {
    if token.len() <= 24 {
        return token.to_owned();
    }
    let end = token.char_indices().nth(20).map_or(token.len(), |(i, _)| i);
    format!("{}…", &token[..end])
}

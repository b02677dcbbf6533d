//! Owns the requests of a reader that reads ahead: the runtime they go on,
//! the request sent ahead for the next page, and a cursor page's answer
//! sending the next page's request itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument as _;
use url::Url;

use super::requests::{PageRequests, page_request};
use super::{scanned_follows, scanned_token};
use crate::http::{Api, HttpError, Reply, Request};
use crate::record::FieldPath;
use crate::stop::Stop;

/// The requests of a reader that reads ahead, and the runtime they go on,
/// driven by a thread of its own at the process's priority. Sent from the
/// reader's runtime, a request sent ahead left only once the reader next
/// waited, its page parsed; and the reader, lowered below the write path,
/// was slow to wake to an answer on a busy machine: against a source taking
/// 20 ms a page of 500 records, a median 1.5–1.6 ms (up to 3–4) from one
/// answer to the next request. Every request of such a reader goes there,
/// and so do the connections they open (a connection is driven by the
/// runtime that opened it).
#[derive(Debug, Clone)]
pub(super) struct Fetching {
    api: Arc<Api>,
    runtime: tokio::runtime::Handle,
    /// What the source's page requests carry beside a GET's query.
    shape: Option<Arc<PageRequests>>,
}

/// What a cursor page's request needs to send the next page's itself, once
/// answered: the token is found in the answer's text (`rawjson`), so the
/// next request leaves without the reader.
#[derive(Debug, Clone)]
pub(super) struct Follow {
    pub url: Url,
    /// The query without the token.
    pub query: Vec<(String, String)>,
    pub token_path: FieldPath,
    pub token_param: String,
    /// `more_path` and `end_path`: the next request goes only where the
    /// answer's text surely says a page follows.
    pub more_path: Option<FieldPath>,
    pub end_path: Option<FieldPath>,
}

/// A request sent for the next page before the page before it was read whole.
#[derive(Debug)]
pub(super) struct Ahead {
    pub url: Url,
    pub query: Vec<(String, String)>,
    /// The answer and, when it sent the request for the page after it, the
    /// token it found for that page (which the reader need not look for
    /// again). Aborted when dropped: a run that stops takes no answer it
    /// will not read (nor the one after it).
    pub reply: AbortOnDropHandle<Answered>,
    /// Set once the reader has taken the answer before this one: only then
    /// may this answer send the next page's request, so that a reader busy
    /// with a page has at most one answer waiting and one request out.
    pub may_follow: Arc<AtomicBool>,
}

/// What an [`Ahead`]'s task gives back: the answer, and the next page's
/// token with the request it sent for that page, when it sent one.
pub(super) type Answered = (Result<Reply, HttpError>, Option<(String, Ahead)>);

impl Fetching {
    pub fn new(
        api: Arc<Api>,
        runtime: tokio::runtime::Handle,
        shape: Option<Arc<PageRequests>>,
    ) -> Self {
        Fetching {
            api,
            runtime,
            shape,
        }
    }

    /// Sends a request on the fetching runtime.
    pub fn send(
        &self,
        request: Request,
        stop: &Stop,
    ) -> AbortOnDropHandle<Result<Reply, HttpError>> {
        let (api, stop) = (Arc::clone(&self.api), stop.clone());
        self.spawn(async move { api.send(&request, &stop).await })
    }

    /// Sends the request for a page ahead; with `follow`, its answer sends
    /// the request for the page after it, when `may_follow` is set by then.
    pub fn ahead(
        &self,
        url: Url,
        query: Vec<(String, String)>,
        follow: Option<Follow>,
        may_follow: bool,
        stop: &Stop,
    ) -> Ahead {
        let may = Arc::new(AtomicBool::new(may_follow));
        let request = page_request(self.shape.as_deref(), url.clone(), query.clone());
        let asked = query.clone();
        let (fetching, stop, flag) = (self.clone(), stop.clone(), Arc::clone(&may));
        let task = async move {
            let sent = fetching.api.send(&request, &stop).await;
            let next = match (&sent, follow) {
                (Ok(reply), Some(follow))
                    if flag.load(Ordering::Acquire)
                        && scanned_follows(
                            &reply.body,
                            follow.more_path.as_ref(),
                            follow.end_path.as_ref(),
                        ) == Some(true) =>
                {
                    // The token this request sent, given back, leads
                    // nowhere new: the reader judges it (an end, or a loop).
                    let sent = |token: &String| {
                        asked
                            .iter()
                            .any(|(k, v)| *k == follow.token_param && v == token)
                    };
                    scanned_token(&reply.body, &follow.token_path)
                        .filter(|token| !sent(token))
                        .map(|token| {
                            let mut query = follow.query.clone();
                            query.push((follow.token_param.clone(), token.clone()));
                            let url = follow.url.clone();
                            (
                                token,
                                fetching.ahead(url, query, Some(follow), false, &stop),
                            )
                        })
                }
                _ => None,
            };
            (sent, next)
        };
        Ahead {
            url,
            query,
            reply: self.spawn(task),
            may_follow: may,
        }
    }

    /// A task on the fetching runtime, in the caller's span, aborted when
    /// its handle is dropped.
    fn spawn<T: Send + 'static>(
        &self,
        task: impl Future<Output = T> + Send + 'static,
    ) -> AbortOnDropHandle<T> {
        AbortOnDropHandle::new(
            self.runtime
                .spawn(task.instrument(tracing::Span::current())),
        )
    }
}

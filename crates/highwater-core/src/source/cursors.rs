//! Owns cursor pagination on the reader: a token from the answer, sent back
//! as a parameter (read ahead where the answer's text shows it), or the last
//! record's field (`token_field`); the list ends where `more_path` or
//! `end_path` say, or where the token sent comes back with no records.

use super::*;

impl Reader<'_> {
    /// The next page after the last record's `field` (Stripe's `starting_after`).
    pub(super) async fn after_last_record(
        &mut self,
        token_param: &str,
        field: &FieldPath,
        more_path: Option<FieldPath>,
        end_path: Option<FieldPath>,
        stop: &Stop,
    ) -> Result<Page, SourceError> {
        let mut query = self.base_query();
        if let Cursor::Token { token } = &self.cursor {
            query.push((token_param.to_owned(), token.clone()));
        }
        let url = self.list_url()?;
        let (body, _) = self.fetch_page(url.clone(), query.clone(), stop).await?;
        let more = follows(more_path.as_ref(), end_path.as_ref(), &body);
        let records = self.records(body, &url)?;
        // The last record as the answer gave it: the token of the page after.
        let token = records.last().and_then(|r| token_of(field.get(r.body())));
        let records = self
            .settle(records, &url, query, self.bound_floor(), stop)
            .await?;
        let cursor_after = match token.filter(|_| more) {
            None => Cursor::End,
            Some(token) => {
                if !self.seen.insert(token.clone()) {
                    return Err(SourceError::Loop {
                        what: "cursor token",
                        detail: abbreviate(&token),
                    });
                }
                let mut next = self.base_query();
                next.push((token_param.to_owned(), token.clone()));
                self.send_ahead(url.clone(), next, None, stop);
                Cursor::Token { token }
            }
        };
        Ok(self.page(records, cursor_after, 1))
    }

    /// The next page of a token taken from the answer at `token_path`.
    pub(super) async fn token_page(
        &mut self,
        token_path: &FieldPath,
        token_param: &str,
        more_path: Option<FieldPath>,
        end_path: Option<FieldPath>,
        stop: &Stop,
    ) -> Result<Page, SourceError> {
        let mut query = self.base_query();
        let sent = match &self.cursor {
            Cursor::Token { token } => Some(token.clone()),
            _ => None,
        };
        if let Some(token) = &sent {
            query.push((token_param.to_owned(), token.clone()));
        }
        let url = self.list_url()?;
        let (request, reply, scanned) = self.page_reply(url.clone(), query.clone(), stop).await?;
        // Read ahead, the next request goes before this answer is
        // parsed, where its token is found without parsing it.
        let scanned = match (scanned, &self.read_ahead) {
            (Some(token), _) => Some(token),
            (None, Some(_))
                if scanned_follows(&reply.body, more_path.as_ref(), end_path.as_ref())
                    == Some(true) =>
            {
                scanned_token(&reply.body, token_path)
            }
            (None, _) => None,
        };
        // The token just sent, given back: the end of a stream when
        // the page is empty (Zendesk's export answers so at its end),
        // an API that loops when it is not.
        let mut repeated = false;
        let scanned = match scanned {
            Some(token) if sent.as_ref() == Some(&token) => {
                repeated = true;
                None
            }
            Some(token) => Some(self.token_cursor(token, token_path, token_param, &url, stop)?),
            None => None,
        };
        let (body, _) = self.parsed(&request, reply, stop).await?;
        // A token beside `has_more: false` or `end_of_stream: true`
        // leads nowhere: no request goes with it (the scan that sends
        // one ahead reads the same flags).
        let follows = follows(more_path.as_ref(), end_path.as_ref(), &body);
        let cursor_after = match scanned {
            Some(cursor) => cursor,
            None if !follows => Cursor::End,
            None => match token_of(token_path.get(&body)) {
                Some(token) if repeated || sent.as_ref() == Some(&token) => {
                    repeated = true;
                    Cursor::End
                }
                Some(token) => self.token_cursor(token, token_path, token_param, &url, stop)?,
                None => Cursor::End,
            },
        };
        let token_absent = token_path.get(&body).is_none_or(Value::is_null);
        let records = self.records(body, &url)?;
        // Nothing said the list ends; the token is simply not where the
        // config looks, and a full page says more may follow.
        if sent.is_none()
            && token_absent
            && more_path.is_none()
            && end_path.is_none()
            && matches!(cursor_after, Cursor::End)
            && self.spec.page_size_param.is_some()
            && records.len() >= self.spec.page_size as usize
        {
            crate::obs::FullPageEndsList {
                sync: self.api.sync(),
                records: records.len(),
                path: &token_path.to_string(),
                key: "token_path",
            }
            .emit();
        }
        if repeated
            && !records.is_empty()
            && let Some(token) = sent
        {
            return Err(SourceError::Loop {
                what: "cursor token",
                detail: abbreviate(&token),
            });
        }
        let records = self
            .settle(records, &url, query, self.bound_floor(), stop)
            .await?;
        Ok(self.page(records, cursor_after, 1))
    }
}

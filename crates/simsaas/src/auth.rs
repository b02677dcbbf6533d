//! Authentication: checking each request against the side's `SimAuth`, and
//! the OAuth2 client-credentials token endpoint with expiring tokens.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::faults::{Kind, mix};
use crate::http::{Params, json_error, json_value};
use crate::stats::{Counters, bump};
use crate::{SimAuth, lock};

#[derive(Debug)]
pub(crate) struct AuthGate {
    auth: SimAuth,
    seed: u64,
    side: u64,
    /// Live OAuth tokens and their expiry; pruned on every issuance so it
    /// stays bounded by the tokens alive within one TTL.
    tokens: Mutex<HashMap<String, Instant>>,
    issued: AtomicU64,
    /// The one refresh token the endpoint takes now, when it rotates them.
    refresh: Mutex<Option<String>>,
}

fn authorization<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<&'a str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (s, rest) = v.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let raw = authorization(headers, "Basic")?;
    let decoded = String::from_utf8(STANDARD.decode(raw).ok()?).ok()?;
    let (u, p) = decoded.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

impl AuthGate {
    pub(crate) fn new(auth: SimAuth, seed: u64, side: u64) -> Self {
        AuthGate {
            seed,
            side,
            refresh: Mutex::new(match &auth {
                SimAuth::OAuth2 { refresh_token, .. } => refresh_token.clone(),
                _ => None,
            }),
            tokens: Mutex::new(HashMap::new()),
            issued: AtomicU64::new(0),
            auth,
        }
    }

    /// Whether the request carries valid credentials for this side.
    pub(crate) fn check(&self, headers: &HeaderMap, params: &Params) -> bool {
        match &self.auth {
            SimAuth::None => true,
            SimAuth::Bearer(token) => authorization(headers, "Bearer") == Some(token.as_str()),
            SimAuth::Basic { user, password } => {
                basic_credentials(headers).is_some_and(|(u, p)| &u == user && &p == password)
            }
            SimAuth::ApiKeyHeader { header, key } => headers
                .get(header.as_str())
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v == key),
            SimAuth::ApiKeyQuery { param, key } => params.get(param) == Some(key.as_str()),
            SimAuth::OAuth2 { .. } => {
                let Some(token) = authorization(headers, "Bearer") else {
                    return false;
                };
                lock(&self.tokens)
                    .get(token)
                    .is_some_and(|exp| Instant::now() < *exp)
            }
        }
    }

    /// `POST /oauth/token`: client credentials, in the form or via Basic; with
    /// the refresh-token grant when the side rotates refresh tokens, which
    /// then takes only the one it gave last.
    pub(crate) fn token_endpoint(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        counters: &Counters,
    ) -> Response {
        let SimAuth::OAuth2 {
            client_id,
            client_secret,
            token_ttl,
            refresh_token: rotating,
        } = &self.auth
        else {
            return json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                Some("this API does not use OAuth2"),
            );
        };
        let form: HashMap<String, String> =
            url::form_urlencoded::parse(body).into_owned().collect();
        let grant = if rotating.is_some() {
            "refresh_token"
        } else {
            "client_credentials"
        };
        match form.get("grant_type").map(String::as_str) {
            Some(g) if g == grant => {}
            Some(_) => return json_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", None),
            None => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    Some("grant_type is required"),
                );
            }
        }
        let creds = match (form.get("client_id"), form.get("client_secret")) {
            (Some(id), Some(secret)) => Some((id.clone(), secret.clone())),
            _ => basic_credentials(headers),
        };
        if creds.as_ref() != Some(&(client_id.clone(), client_secret.clone())) {
            bump(&counters.unauthorized);
            return json_error(StatusCode::UNAUTHORIZED, "invalid_client", None);
        }
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        let token = format!(
            "simtok_{:016x}",
            mix(&[self.seed, self.side, Kind::Token as u64, n])
        );
        let refresh = if rotating.is_some() {
            let mut current = lock(&self.refresh);
            if current.as_deref() != form.get("refresh_token").map(String::as_str) {
                bump(&counters.unauthorized);
                return json_error(StatusCode::BAD_REQUEST, "invalid_grant", None);
            }
            let next = format!("simrefresh_{n}");
            *current = Some(next.clone());
            Some(next)
        } else {
            None
        };
        let now = Instant::now();
        {
            let mut tokens = lock(&self.tokens);
            tokens.retain(|_, exp| *exp > now);
            tokens.insert(token.clone(), now + *token_ttl);
        }
        bump(&counters.tokens_issued);
        // Rounded up: a sub-second TTL must not read as "already expired".
        let expires_in = token_ttl.as_secs() + u64::from(token_ttl.subsec_nanos() > 0);
        let mut answer = serde_json::json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": expires_in,
        });
        if let Some(refresh) = refresh {
            answer["refresh_token"] = refresh.into();
        }
        json_value(StatusCode::OK, &answer)
    }
}

//! Optional access control for the whole dashboard and API, for when probewatch listens
//! beyond loopback: HTTP basic auth for people (browsers ask for it themselves), and the
//! API token as a bearer token for machines. Health checks (`/healthz`, `/-/healthy`,
//! `/-/ready`) stay open for load balancers.
//! TLS is left to a reverse proxy in front (see docs/dashboard.md).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::AppState;

/// Who may use the dashboard and API.
#[derive(Debug, Clone)]
pub struct Access {
    /// Basic-auth user name.
    pub username: String,
    /// Basic-auth password.
    pub password: String,
}

/// Compares two secrets in time that depends only on their lengths, so the time taken
/// does not reveal how much of a guess was right.
pub fn same_secret(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Splits an `Authorization` value into its scheme and credentials; the scheme is matched
/// without regard to case by the callers (RFC 7235: `basic` and `Basic` are one scheme).
pub(crate) fn auth_scheme(value: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = value.trim_start().split_once(' ')?;
    Some((scheme, rest.trim()))
}

/// Who a request's credentials name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    /// A machine with the API token.
    Token,
    /// A person logged in with basic auth, by user name.
    User(String),
}

/// Whether the request's `Authorization` header satisfies `access` (or the API token).
pub(crate) fn allowed(access: &Access, api_token: Option<&str>, headers: &HeaderMap) -> bool {
    caller(Some(access), api_token, headers).is_some()
}

/// Who the request's `Authorization` header proves it is: the API token holder, or the
/// basic-auth user of `access`. None: no credentials, or wrong ones.
pub(crate) fn caller(
    access: Option<&Access>,
    api_token: Option<&str>,
    headers: &HeaderMap,
) -> Option<Caller> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())?;
    let (scheme, credentials) = auth_scheme(value)?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return api_token
            .is_some_and(|t| same_secret(credentials, t))
            .then_some(Caller::Token);
    }
    let access = access.filter(|_| scheme.eq_ignore_ascii_case("basic"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    // Both are compared, whatever the first gives, so timing says nothing about which failed.
    let user_ok = same_secret(user, &access.username);
    let password_ok = same_secret(password, &access.password);
    (user_ok && password_ok).then(|| Caller::User(user.to_string()))
}

/// Decides who may change state (silences, acknowledgements, test notifications): a
/// machine with the API token, or a person logged in with basic auth — from a page's own
/// script, which sends JSON (or a DELETE): a form on another site can send neither without
/// a CORS preflight, which probewatch never grants, so a logged-in browser cannot be made
/// to change anything. `Ok` names the caller (`api` for the token); `Err` is the answer.
pub(crate) fn authorize_write(
    state: &AppState,
    method: &axum::http::Method,
    headers: &HeaderMap,
    what: &str,
) -> Result<String, Box<Response>> {
    let refuse = |status: StatusCode, kind: &str, message: String| {
        let body = serde_json::json!({"status": "error", "errorType": kind, "error": message});
        Box::new((status, axum::Json(body)).into_response())
    };
    if state.api_token.is_none() && state.access.is_none() {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{what} needs api_token or [access] in the configuration"),
        ));
    }
    match caller(state.access.as_deref(), state.api_token.as_deref(), headers) {
        Some(Caller::Token) => Ok("api".to_string()),
        Some(Caller::User(user)) => {
            let json = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim_start().starts_with("application/json"));
            if json || method == axum::http::Method::DELETE {
                Ok(user)
            } else {
                Err(refuse(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "bad_data",
                    "changes from a logged-in user must be sent as application/json".into(),
                ))
            }
        }
        None => Err(refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong credentials (Authorization: Bearer <api_token>, or the \
             [access] user's basic auth)"
                .into(),
        )),
    }
}

/// Middleware: lets a request through when access control is off, the path is a health
/// check (`/healthz`, `/-/healthy`, `/-/ready`),
/// or the credentials are right; otherwise answers 401 with a basic-auth challenge.
pub(crate) async fn require(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(access) = &state.access else {
        return next.run(request).await;
    };
    // Health and readiness stay open for load balancers and supervisors; agents and push
    // clients are checked against their own tokens.
    let path = request.uri().path();
    // The public status page, its badges and the stylesheet it uses show only what the
    // status page's groups choose (see status_page.rs).
    let public = state.status_page().is_some()
        && (path == "/status" || path.starts_with("/badge/") || path == "/static/app.css");
    if public
        || matches!(
            path,
            "/healthz" | "/-/healthy" | "/-/ready" | "/api/v1/agent/ingest" | "/api/v1/push"
        )
        || allowed(access, state.api_token.as_deref(), request.headers())
    {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            "Basic realm=\"probewatch\", charset=\"UTF-8\"",
        )],
        "probewatch needs a user name and password (or Authorization: Bearer <api_token>)\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(value).expect("header"),
        );
        h
    }

    #[test]
    fn basic_auth_and_the_api_token_are_accepted_and_nothing_else() {
        let access = Access {
            username: "ops".into(),
            password: "s3cret:with-colon".into(),
        };
        let basic = |u: &str, p: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        };
        assert!(allowed(
            &access,
            None,
            &headers(&basic("ops", "s3cret:with-colon"))
        ));
        assert!(!allowed(&access, None, &headers(&basic("ops", "s3cret"))));
        assert!(!allowed(
            &access,
            None,
            &headers(&basic("root", "s3cret:with-colon"))
        ));
        assert!(allowed(&access, Some("tok"), &headers("Bearer tok")));
        // RFC 7235: scheme names are case-insensitive.
        assert!(allowed(&access, Some("tok"), &headers("bearer tok")));
        assert!(allowed(&access, Some("tok"), &headers("BEARER  tok")));
        let lower = basic("ops", "s3cret:with-colon").replacen("Basic", "basic", 1);
        assert!(allowed(&access, None, &headers(&lower)));
        assert!(!allowed(&access, Some("tok"), &headers("Token tok")));
        assert!(!allowed(&access, Some("tok"), &headers("Bearer tok2")));
        assert!(!allowed(&access, None, &headers("Bearer tok")));
        assert!(!allowed(&access, None, &headers("Basic !!!")));
        assert!(!allowed(&access, None, &HeaderMap::new()));
    }
}

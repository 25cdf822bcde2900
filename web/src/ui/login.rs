//! Logging in and out of the UI: `GET /login` shows the form, `POST /login` checks the cluster
//! secret and sets the session cookie (see [`crate::auth`]), `POST /logout` drops it. Also the
//! page a form post gets when it is not logged in.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use maud::{html, Markup};
use serde::Deserialize;

use crate::api::ClusterApi;
use crate::auth::{self, Session};
use crate::error::Error;
use crate::ui::layout::{html_response, page, see_other, Nav};

/// The query of `GET /login`: where to go afterwards.
#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// The form of `POST /login`.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    secret: String,
    next: Option<String>,
}

/// A local path to go to after logging in; anything else (another host, `//host`, a scheme)
/// becomes `/`, so the login page cannot be used to send people elsewhere.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.starts_with("/\\")
                && !path.chars().any(|c| c.is_control() || c == '\\') =>
        {
            path.to_string()
        }
        _ => "/".to_string(),
    }
}

/// `GET /login`.
pub async fn login_page(session: Session, query: web::Query<LoginQuery>) -> HttpResponse {
    let next = safe_next(query.next.as_deref());
    html_response(StatusCode::OK, login_body(session, &next, None))
}

/// `POST /login`: the right secret sets the cookie and goes on to `next`; a wrong one shows the
/// form again with a 401.
pub async fn login(
    api: web::Data<dyn ClusterApi>,
    req: HttpRequest,
    form: web::Form<LoginForm>,
) -> HttpResponse {
    let next = safe_next(form.next.as_deref());
    let secret = form.secret.trim();
    if secret.is_empty() {
        let body = login_body(Session::default(), &next, Some("Enter the cluster secret."));
        return html_response(StatusCode::UNAUTHORIZED, body);
    }
    if !auth::constant_time_eq(secret.as_bytes(), api.secret().as_bytes()) {
        tracing::info!(peer = ?req.peer_addr(), "UI login with a wrong secret");
        let body = login_body(
            Session::default(),
            &next,
            Some("That is not the cluster secret."),
        );
        return html_response(StatusCode::UNAUTHORIZED, body);
    }
    let secure = req.connection_info().scheme() == "https";
    let mut response = see_other(&next);
    if let Ok(value) = header::HeaderValue::from_str(&auth::login_cookie(api.secret(), secure)) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `POST /logout`: drops the cookie and goes to the first page.
pub async fn logout() -> HttpResponse {
    let mut response = see_other("/");
    if let Ok(value) = header::HeaderValue::from_str(&auth::logout_cookie()) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

fn login_body(session: Session, next: &str, error: Option<&str>) -> Markup {
    page(
        "Log in",
        Nav::Login,
        session,
        html! {
            h1 { "Log in" }
            p.subtitle {
                "Anyone who can reach this address may look. Submitting and cancelling jobs takes "
                "the cluster secret (" code { "[cluster] secret" } " in " code { "cluster.toml" } ")."
            }
            @if session.logged_in {
                div.flash.ok { "You are logged in." }
                p { a.btn.primary href=(next) { "Go on" } " "
                    form.inline method="post" action="/logout" { button type="submit" { "Log out" } } }
            } @else {
                form.form method="post" action="/login" {
                    input type="hidden" name="next" value=(next);
                    div.field.invalid[error.is_some()] {
                        label for="secret" { "Cluster secret" }
                        input #secret type="password" name="secret" autocomplete="current-password"
                            required autofocus;
                        @if let Some(error) = error { div.error { (error) } }
                        div.help { "The browser keeps a login cookie for 7 days (HttpOnly, "
                            "this site only); the secret itself is not stored." }
                    }
                    div.actions { button.primary type="submit" { "Log in" } }
                }
            }
        },
    )
}

/// The page a UI form post gets without a login (401) or from another origin (403): what
/// happened and a way to log in that comes back to the page the form was on.
pub fn refused_page(error: &Error, req: &HttpRequest) -> HttpResponse {
    let status = error.status_code();
    let back = referer_path(req).unwrap_or_else(|| "/".to_string());
    let login = format!("/login?next={}", crate::ui::job_list::encode(&back));
    html_response(
        status,
        page(
            "Log in required",
            Nav::Login,
            Session::default(),
            html! {
                h1 { "Log in to do this" }
                div.flash.bad { (error.to_string()) }
                p { "Changing anything takes the cluster secret. "
                    a.btn.primary href=(login) { "Log in" } }
            },
        ),
    )
}

/// The path of the `Referer` if it is this site, so a refused form can come back to its page.
fn referer_path(req: &HttpRequest) -> Option<String> {
    let referer = req.headers().get(header::REFERER)?.to_str().ok()?;
    let host = req.headers().get(header::HOST)?.to_str().ok()?;
    let rest = referer
        .strip_prefix("http://")
        .or_else(|| referer.strip_prefix("https://"))?
        .strip_prefix(host)?;
    Some(safe_next(Some(rest))).filter(|p| p != "/" || rest == "/")
}

#[cfg(test)]
mod tests {
    use actix_web::http::{header, StatusCode};
    use actix_web::test;

    use crate::testing::{app, login_cookie, FakeCluster, SECRET};

    #[actix_web::test]
    async fn the_right_secret_sets_an_http_only_strict_cookie() {
        let app = app(FakeCluster::new()).await;
        let req = test::TestRequest::post()
            .uri("/login")
            .set_form([("secret", SECRET), ("next", "/submit")])
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(res.headers().get(header::LOCATION).unwrap(), "/submit");
        let cookie = res
            .headers()
            .get(header::SET_COOKIE)
            .unwrap()
            .to_str()
            .unwrap();
        assert!(cookie.starts_with("mrc_session="), "{cookie}");
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        assert!(!cookie.contains(SECRET), "the secret is not in the cookie");

        // the cookie it set logs the next request in
        let token = cookie.split(';').next().unwrap().to_string();
        let page = test::TestRequest::get()
            .uri("/login")
            .insert_header((header::COOKIE, token))
            .to_request();
        let body = test::call_and_read_body(&app, page).await;
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            body.contains("You are logged in") && body.contains("Log out"),
            "{body}"
        );
    }

    #[actix_web::test]
    async fn a_wrong_secret_is_refused_with_the_form_again() {
        let app = app(FakeCluster::new()).await;
        let req = test::TestRequest::post()
            .uri("/login")
            .set_form([("secret", "nope"), ("next", "https://evil.example/")])
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert!(res.headers().get(header::SET_COOKIE).is_none());
        let body = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
        assert!(body.contains("That is not the cluster secret"), "{body}");
        assert!(body.contains(r#"name="next" value="/""#), "{body}");
    }

    #[actix_web::test]
    async fn the_login_page_keeps_next_and_logout_clears_the_cookie() {
        let app = app(FakeCluster::new()).await;
        let req = test::TestRequest::get()
            .uri("/login?next=/jobs/7")
            .to_request();
        let body = String::from_utf8(test::call_and_read_body(&app, req).await.to_vec()).unwrap();
        assert!(
            body.contains(r#"type="password""#) && body.contains(r#"value="/jobs/7""#),
            "{body}"
        );

        let req = test::TestRequest::post()
            .uri("/logout")
            .insert_header((header::COOKIE, login_cookie()))
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        let cookie = res
            .headers()
            .get(header::SET_COOKIE)
            .unwrap()
            .to_str()
            .unwrap();
        assert!(cookie.contains("Max-Age=0"), "{cookie}");
    }

    #[actix_web::test]
    async fn the_api_does_not_take_the_cookie() {
        let fake = FakeCluster::new();
        let app = app(fake.clone()).await;
        let req = test::TestRequest::post()
            .uri("/api/jobs")
            .insert_header((header::COOKIE, login_cookie()))
            .set_payload(r#"{"kind": "task", "job": "echo", "payload": 1}"#)
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            res.headers().get(header::CONTENT_TYPE).unwrap(),
            "application/json"
        );
        assert!(fake.state().submitted.is_empty());
    }

    #[actix_web::test]
    async fn a_refused_form_offers_to_log_in_and_come_back() {
        let app = app(FakeCluster::new()).await;
        let req = test::TestRequest::post()
            .uri("/submit")
            .insert_header((header::HOST, "127.0.0.1:8080"))
            .insert_header((header::REFERER, "http://127.0.0.1:8080/submit?kind=task"))
            .set_form([("kind", "task")])
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let body = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
        assert!(
            body.contains(r#"href="/login?next=%2Fsubmit%3Fkind%3Dtask""#),
            "{body}"
        );
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/jobs/5")), "/jobs/5");
        assert_eq!(safe_next(Some("/jobs?state=failed")), "/jobs?state=failed");
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/\\evil",
            "jobs",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }
}

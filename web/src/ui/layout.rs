//! The frame every page shares: the document head, the nav bar (with the live indicator and
//! the login state), the embedded stylesheet and script (served from `/assets/`), the security
//! headers of every HTML response, and the error page.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::auth::Session;
use crate::error::Error;

/// The stylesheet, embedded so the UI needs no static files.
pub const CSS: &str = include_str!("assets/app.css");
/// The live-update script (see its header comment), embedded likewise.
pub const SCRIPT: &str = include_str!("assets/app.js");
/// Bumped when the assets change, so browsers do not keep a stale copy past a release.
pub const ASSET_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The Content-Security-Policy of every page: no inline script, nothing from elsewhere, no
/// framing (the cancel button must not be clickjacked).
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The sections of the nav bar; the current one is highlighted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nav {
    /// The first page.
    Overview,
    /// The jobs list and the job pages.
    Jobs,
    /// The submit form.
    Submit,
    /// Masters and workers.
    Cluster,
    /// Held locks.
    Locks,
    /// The login page (highlights nothing).
    Login,
}

const LOGO: PreEscaped<&str> = PreEscaped(
    r##"<svg width="22" height="22" viewBox="0 0 22 22" aria-hidden="true"><rect x="1" y="1" width="9" height="9" rx="2" fill="#6d9cf0"/><rect x="12" y="1" width="9" height="9" rx="2" fill="#3ccb6e"/><rect x="1" y="12" width="9" height="9" rx="2" fill="#e0a030"/><rect x="12" y="12" width="9" height="9" rx="2" fill="#b08cf0"/></svg>"##,
);

/// A whole page: head, nav bar with `nav` highlighted, `body`, and the script.
pub fn page(title: &str, nav: Nav, session: Session, body: Markup) -> Markup {
    let link = |target: Nav, href: &str, label: &str| {
        html! { a href=(href) class=[(nav == target).then_some("active")] { (label) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · mrcluster" }
                link rel="icon" href="data:,";
                link rel="stylesheet" href={ "/assets/app.css?v=" (ASSET_VERSION) };
                script src={ "/assets/app.js?v=" (ASSET_VERSION) } defer {}
            }
            body {
                header.top {
                    div.bar {
                        a.brand href="/" { (LOGO) "mrcluster" }
                        nav {
                            (link(Nav::Overview, "/", "Overview"))
                            (link(Nav::Jobs, "/jobs", "Jobs"))
                            (link(Nav::Submit, "/submit", "Submit"))
                            (link(Nav::Cluster, "/cluster", "Cluster"))
                            (link(Nav::Locks, "/locks", "Locks"))
                            a href="/metrics" { "Metrics" }
                        }
                        div.who {
                            span #live .live title="Updates every 2 s" {
                                span.dot {} span.label { "live" }
                            }
                            @if session.logged_in {
                                form.inline method="post" action="/logout" {
                                    button.link type="submit" { "Log out" }
                                }
                            } @else {
                                a href="/login" { "Log in" }
                            }
                        }
                    }
                }
                main { (body) }
                footer { "mrcluster · reads are open, changes need the cluster secret · "
                    a href="/api/jobs" { "JSON API" } }
            }
        }
    }
}

/// Adds the headers every UI response carries.
pub fn secure_headers(response: &mut HttpResponse) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// An HTML response with the UI's security headers.
pub fn html_response(status: StatusCode, markup: Markup) -> HttpResponse {
    let mut response = HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(markup.into_string());
    secure_headers(&mut response);
    response
}

/// A `303 See Other` to a page (after a form post), so reloading does not post again.
pub fn see_other(location: &str) -> HttpResponse {
    let mut response = HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish();
    secure_headers(&mut response);
    response
}

/// A page explaining an error, with the error's status.
pub fn error_page(error: &Error, session: Session) -> HttpResponse {
    let status = error.status_code();
    let title = status.canonical_reason().unwrap_or("Error");
    html_response(
        status,
        page(
            title,
            Nav::Jobs,
            session,
            html! {
                h1 { (status.as_u16()) " " (title) }
                div.flash.bad { (error.to_string()) }
                p { a href="/" { "Back to the overview" } " · " a href="/jobs" { "All jobs" } }
            },
        ),
    )
}

/// `GET /assets/app.css`.
pub async fn stylesheet() -> HttpResponse {
    asset("text/css; charset=utf-8", CSS)
}

/// `GET /assets/app.js`.
pub async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

#[cfg(test)]
mod tests {
    use actix_web::http::header;
    use actix_web::test;

    use crate::testing::{app, FakeCluster};

    #[actix_web::test]
    async fn assets_are_served_with_their_types() {
        let app = app(FakeCluster::new()).await;
        for (uri, ctype, needle) in [
            ("/assets/app.css", "text/css", "--accent"),
            ("/assets/app.js", "text/javascript", "data-refresh"),
        ] {
            let res =
                test::call_service(&app, test::TestRequest::get().uri(uri).to_request()).await;
            assert!(res.status().is_success(), "{uri}");
            let got = res
                .headers()
                .get(header::CONTENT_TYPE)
                .unwrap()
                .to_str()
                .unwrap();
            assert!(got.starts_with(ctype), "{uri}: {got}");
            let body = test::read_body(res).await;
            assert!(std::str::from_utf8(&body).unwrap().contains(needle));
        }
    }

    #[actix_web::test]
    async fn pages_carry_security_headers_and_no_inline_script() {
        let app = app(FakeCluster::new()).await;
        let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
        let csp = res.headers().get(header::CONTENT_SECURITY_POLICY).unwrap();
        assert!(csp.to_str().unwrap().contains("script-src 'self'"));
        assert_eq!(res.headers().get(header::X_FRAME_OPTIONS).unwrap(), "DENY");
        let body = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
        assert!(body.contains(r#"<script src="/assets/app.js"#), "{body}");
        assert!(
            !body.contains("<script>"),
            "inline scripts would be blocked by the CSP"
        );
        assert!(
            body.contains(r#"href="/login""#),
            "logged out: a login link"
        );
    }
}

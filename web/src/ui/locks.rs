//! The locks page, `GET /locks`: every lock that is held or waited for, with its holder, fencing
//! token, lease and queue; it refreshes itself from `GET /fragments/locks`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use maud::{html, Markup};

use crate::api::{ClusterApi, LockView};
use crate::auth::Session;
use crate::error::Error;
use crate::ui::format::{ago, human_ms, now_ms};
use crate::ui::layout::{html_response, page, Nav};

/// `GET /locks`: held and awaited locks.
pub async fn locks_page(api: web::Data<dyn ClusterApi>, session: Session) -> HttpResponse {
    html_response(
        StatusCode::OK,
        page("Locks", Nav::Locks, session, locks_section(&api).await),
    )
}

/// `GET /fragments/locks`: the locks page's body alone, for the refresh script.
pub async fn locks_fragment(api: web::Data<dyn ClusterApi>) -> HttpResponse {
    html_response(StatusCode::OK, locks_section(&api).await)
}

async fn locks_section(api: &web::Data<dyn ClusterApi>) -> Markup {
    let locks = api.locks().await;
    html! {
        section #locks data-refresh="/fragments/locks" {
            h1 { "Locks" }
            p.subtitle {
                "Leases kept alive by their holders; a lock whose lease runs out passes to the first waiter "
                "with a higher fencing token. Take one with " code { "POST /api/locks/{name}/acquire" }
                " or from job code with " code { "ctx.lock(name, ttl, wait)" } "."
            }
            @match &locks {
                Ok(locks) if locks.is_empty() => div.notice #no-locks { p { "No lock is held or waited for." } },
                Ok(locks) => (table(locks)),
                Err(error) => div.flash.bad { "Locks unavailable: " (Error::from(error.clone()).to_string()) },
            }
        }
    }
}

fn table(locks: &[LockView]) -> Markup {
    let now = now_ms();
    html! {
        div.table {
            table.locks {
                thead {
                    tr {
                        th { "Lock" } th { "Holder" } th.num { "Token" } th { "Granted" }
                        th.num { "Lease left / TTL" } th { "Waiting, in order" }
                    }
                }
                tbody {
                    @for lock in locks {
                        tr {
                            td { strong.mono { (lock.name) } }
                            td { @match &lock.owner {
                                Some(owner) => code { (owner) },
                                None => span.muted { "passing on" },
                            } }
                            td.num.mono { @match lock.token { Some(t) => (t), None => "" } }
                            td { (ago(lock.granted_ms, now)) }
                            td.num {
                                @match lock.expires_in_ms { Some(ms) => (human_ms(ms)), None => span.muted { "starting" } }
                                @if let Some(ttl) = lock.ttl_ms { " / " (human_ms(ttl)) }
                            }
                            td.wrap {
                                @for (i, waiter) in lock.waiters.iter().enumerate() {
                                    span.tag title={ "#" (i + 1) " in line" } { (waiter) }
                                }
                                @if lock.waiters.is_empty() { span.muted { "nobody" } }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test;

    use crate::testing::{app, FakeCluster};

    #[actix_web::test]
    async fn the_locks_page_lists_holders_and_tokens() {
        let fake = FakeCluster::new();
        fake.state()
            .locks
            .insert("orders<db>".into(), ("billing-7".into(), 42));
        let app = app(fake.clone()).await;
        let req = test::TestRequest::get().uri("/locks").to_request();
        let page = String::from_utf8(test::call_and_read_body(&app, req).await.to_vec()).unwrap();
        assert!(
            page.contains("orders&lt;db&gt;"),
            "names are escaped: {page}"
        );
        assert!(page.contains("billing-7"));
        assert!(page.contains(">42<"));
        assert!(
            page.contains(r#"<a href="/locks" class="active">"#),
            "{page}"
        );
        assert!(page.contains(r#"data-refresh="/fragments/locks""#));

        fake.state().locks.clear();
        let req = test::TestRequest::get()
            .uri("/fragments/locks")
            .to_request();
        let body = String::from_utf8(test::call_and_read_body(&app, req).await.to_vec()).unwrap();
        assert!(body.starts_with(r#"<section id="locks""#), "{body}");
        assert!(body.contains("No lock is held"), "{body}");
    }
}

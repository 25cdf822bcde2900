//! The frame every page shares: the document head, the embedded stylesheet, the nav bar, and
//! the one inline script, which re-fetches every element marked `data-refresh="<url>"` every
//! two seconds and swaps in the HTML fragment the url returns. A fragment that no longer
//! carries `data-refresh` (a job that ended) stops the polling for that element.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::error::Error;

/// The stylesheet, embedded so the UI needs no static files.
pub const CSS: &str = r#"
:root{--fg:#1d2430;--muted:#687385;--bg:#f6f7f9;--card:#fff;--line:#e3e6eb;--accent:#2f6fde;
--ok:#1d8a4a;--bad:#c8312b;--run:#2f6fde;--wait:#7a6500;--off:#6b7280}
@media (prefers-color-scheme:dark){:root{--fg:#e4e7ec;--muted:#98a2b3;--bg:#14171c;--card:#1c2027;
--line:#2c323c;--accent:#6d9cf0}}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--fg);background:var(--bg)}
header{background:var(--card);border-bottom:1px solid var(--line)}
nav{max-width:1200px;margin:0 auto;padding:.6rem 1rem;display:flex;gap:1.2rem;align-items:center}
nav a{color:var(--muted);text-decoration:none;font-weight:500}
nav a.active,nav a:hover{color:var(--fg)}
nav .brand{color:var(--fg);font-weight:700;margin-right:.8rem}
main{max-width:1200px;margin:0 auto;padding:1rem}
h1{font-size:1.4rem;margin:.4rem 0 1rem;display:flex;gap:.6rem;align-items:center;flex-wrap:wrap}
h2{font-size:1.05rem;margin:1.6rem 0 .6rem}
a{color:var(--accent)}
.muted,.count{color:var(--muted)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:.8rem}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.7rem .9rem}
.card .label{color:var(--muted);font-size:.8rem;text-transform:uppercase;letter-spacing:.04em}
.card .value{font-size:1.3rem;font-weight:600}
.table{overflow-x:auto;background:var(--card);border:1px solid var(--line);border-radius:8px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.45rem .7rem;border-bottom:1px solid var(--line);vertical-align:top;white-space:nowrap}
td.wrap{white-space:normal;word-break:break-word;min-width:12rem}
th{font-size:.8rem;color:var(--muted);font-weight:600;text-transform:uppercase;letter-spacing:.03em}
tr:last-child td{border-bottom:0}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:.05rem .5rem;border-radius:999px;font-size:.8rem;font-weight:600;
color:#fff;background:var(--off)}
.s-succeeded,.s-leader,.s-alive{background:var(--ok)}
.s-failed,.s-lost,.s-dead{background:var(--bad)}
.s-running{background:var(--run)}
.s-queued,.s-scheduled,.s-pending,.s-candidate{background:var(--wait)}
.progress{display:inline-flex;gap:.5rem;align-items:center}
.track{display:inline-block;width:110px;height:8px;border-radius:4px;background:var(--line);overflow:hidden}
.fill{display:block;height:100%;background:var(--accent)}
pre{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.7rem;overflow-x:auto;
margin:0;font-size:.85rem;white-space:pre-wrap;word-break:break-word}
pre.error{border-color:var(--bad);color:var(--bad)}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem;margin:0}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0}
.notice{background:var(--card);border:1px dashed var(--line);border-radius:8px;padding:1.2rem;color:var(--muted)}
code{font-size:.9em}
@media (max-width:600px){nav{gap:.8rem}main{padding:.6rem}.track{width:60px}th,td{padding:.4rem .5rem}}
"#;

/// The live-update script: swaps in fresh fragments every two seconds while the tab is visible.
pub const SCRIPT: &str = r#"
let busy = false;
setInterval(async () => {
  if (busy || document.hidden) return;
  busy = true;
  try {
    for (const el of document.querySelectorAll('[data-refresh]')) {
      const res = await fetch(el.dataset.refresh, {headers: {Accept: 'text/html'}});
      if (res.ok) el.outerHTML = await res.text();
    }
  } catch (_) {
  } finally {
    busy = false;
  }
}, 2000);
"#;

/// The sections of the nav bar; the current one is highlighted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nav {
    /// The jobs list and the job pages.
    Jobs,
    /// Masters and workers.
    Cluster,
}

/// A whole page: head, nav bar with `nav` highlighted, `body`, and the refresh script.
pub fn page(title: &str, nav: Nav, body: Markup) -> Markup {
    let link = |target: Nav, href: &str, label: &str| {
        html! { a href=(href) class=[(nav == target).then_some("active")] { (label) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · cluster" }
                style { (PreEscaped(CSS)) }
            }
            body {
                header {
                    nav {
                        a.brand href="/" { "MapReduce cluster" }
                        (link(Nav::Jobs, "/", "Jobs"))
                        (link(Nav::Cluster, "/cluster", "Cluster"))
                    }
                }
                main { (body) }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    }
}

/// An HTML response.
pub fn html_response(status: StatusCode, markup: Markup) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(markup.into_string())
}

/// A page explaining an error, with the error's status.
pub fn error_page(error: &Error) -> HttpResponse {
    let status = error.status_code();
    let title = status.canonical_reason().unwrap_or("Error");
    html_response(
        status,
        page(
            title,
            Nav::Jobs,
            html! {
                h1 { (status.as_u16()) " " (title) }
                p.notice { (error.to_string()) }
                p { a href="/" { "Back to the jobs" } }
            },
        ),
    )
}

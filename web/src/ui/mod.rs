//! The web UI: server-rendered HTML (maud), no build step, one stylesheet and one small script
//! embedded in the binary.
//!
//! - [`layout`]: the page frame, nav bar, security headers, error page and the `/assets/`.
//! - [`format`](mod@format): badges, progress bars, times, durations, sizes and quantiles.
//! - [`home`]: `GET /`, the cluster at a glance and the recent jobs.
//! - [`job_list`]: `GET /jobs`, every job with state filters, kind filter and paging.
//! - [`job`]: `GET /jobs/{id}` with its tasks, the cancel form and the output files.
//! - [`timeline`]: the job page's SVG task timeline and duration summary.
//! - [`submit`]: `GET`/`POST /submit`, a form per job kind.
//! - [`cluster`]: `GET /cluster`, masters and workers.
//! - [`locks`]: `GET /locks`, held locks, their tokens, leases and queues.
//! - [`login`]: `GET`/`POST /login` and `POST /logout`, the session cookie for the forms.
//!
//! Each page is made of sections that carry `data-refresh="<url>"`; the url
//! (`/fragments/...`) serves the same section alone, so live updates reuse the server-side
//! templates instead of duplicating them in JavaScript. Everything shown is escaped by maud
//! (the timeline's SVG text by [`timeline`] itself).

pub mod cluster;
pub mod format;
pub mod home;
pub mod job;
pub mod job_list;
pub mod layout;
pub mod locks;
pub mod login;
pub mod submit;
pub mod timeline;

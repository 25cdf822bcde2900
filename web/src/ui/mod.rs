//! The web UI: server-rendered HTML (maud), no build step, a little CSS and one small script.
//!
//! - [`layout`]: the page frame, the stylesheet, the nav bar and the refresh script.
//! - [`format`](mod@format): badges, progress bars, times, durations and sizes.
//! - [`home`]: `GET /`, the cluster at a glance and the recent jobs.
//! - [`job`]: `GET /jobs/{id}`, one job with its tasks.
//! - [`cluster`]: `GET /cluster`, masters and workers.
//!
//! Each page is made of sections that carry `data-refresh="<url>"`; the url
//! (`/fragments/...`) serves the same section alone, so live updates reuse the server-side
//! templates instead of duplicating them in JavaScript. Everything shown is escaped by maud.

pub mod cluster;
pub mod format;
pub mod home;
pub mod job;
pub mod layout;

//! A small W3C WebDriver client for the browser test: it starts Debian's `chromedriver`, which
//! drives headless `chromium`, and speaks the WebDriver JSON protocol to it over HTTP with
//! `ureq` (no async runtime, no C++ build). Only the commands the test needs are here.
//!
//! Rules (STYLE.md, "Tests"): the driver listens on a port found free by binding port 0, waits
//! are bounded polls ([`Browser::wait_for`]), and the driver process (and with it the browser)
//! is killed in `Drop`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde_json::{json, Value};

/// How often a wait re-checks.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long the driver gets to start.
const DRIVER_START: Duration = Duration::from_secs(30);
/// The W3C key of an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The flags without which headless Chromium stalls on a machine with no network (it tries to
/// reach update, sync and first-run services) or in a container (sandbox, /dev/shm).
pub const CHROMIUM_FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// Looks for `name` in `$PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// A headless Chromium session behind a chromedriver process.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
}

impl Browser {
    /// Starts `chromedriver` (from `$CHROMEDRIVER` or `$PATH`) and a Chromium session (binary
    /// from `$CHROME_BIN`, else `/usr/bin/chromium`) with a fresh profile in `profile`, its
    /// window `width` × `height`. The driver's log goes to `log`.
    ///
    /// # Errors
    /// If either program is missing (install Debian's `chromium` and `chromium-driver`), or the
    /// session cannot be created in time.
    pub fn start(profile: &Path, log: &Path, width: u32, height: u32) -> Result<Browser> {
        let driver_bin = std::env::var_os("CHROMEDRIVER")
            .map(PathBuf::from)
            .or_else(|| which("chromedriver"))
            .context("chromedriver not found: apt-get install chromium chromium-driver")?;
        let chrome_bin = std::env::var_os("CHROME_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
        if !chrome_bin.is_file() {
            bail!(
                "{} not found: apt-get install chromium chromium-driver",
                chrome_bin.display()
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log_file = std::fs::File::create(log)?;
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", driver_bin.display()))?;
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .build();
        let mut browser = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            agent,
        };
        let deadline = Instant::now() + DRIVER_START;
        loop {
            let ready = browser
                .agent
                .get(&format!("{}/status", browser.base))
                .call()
                .ok()
                .and_then(|r| r.into_json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                break;
            }
            if let Some(status) = browser.driver.try_wait()? {
                bail!(
                    "chromedriver exited at startup ({status}); see {}",
                    log.display()
                );
            }
            if Instant::now() > deadline {
                bail!("chromedriver did not become ready in {DRIVER_START:?}");
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.push(format!("--window-size={width},{height}"));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chrome_bin.to_string_lossy(), "args": args},
        }}});
        let created = browser.call("POST", "/session", Some(capabilities))?;
        browser.session = created["sessionId"]
            .as_str()
            .context("no sessionId in the new-session reply")?
            .to_string();
        Ok(browser)
    }

    /// One WebDriver command; returns its `value`.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let request = self.agent.request(method, &url);
        let reply = match body {
            Some(body) => request.send_json(body),
            None => request.call(),
        };
        let response = match reply {
            Ok(response) => response,
            Err(ureq::Error::Status(code, response)) => {
                let text = response.into_string().unwrap_or_default();
                bail!("{method} {path}: {code}: {text}");
            }
            Err(e) => return Err(e).with_context(|| format!("{method} {path}")),
        };
        let value: Value = response.into_json()?;
        Ok(value.get("value").cloned().unwrap_or(Value::Null))
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    /// Opens `url`.
    ///
    /// # Errors
    /// On a driver error.
    pub fn goto(&self, url: &str) -> Result<()> {
        self.session_call("POST", "/url", Some(json!({ "url": url })))?;
        Ok(())
    }

    /// The current URL.
    ///
    /// # Errors
    /// On a driver error.
    pub fn url(&self) -> Result<String> {
        Ok(self
            .session_call("GET", "/url", None)?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Resizes the window.
    ///
    /// # Errors
    /// On a driver error.
    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        self.session_call(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )?;
        Ok(())
    }

    /// The first element matching a CSS selector.
    ///
    /// # Errors
    /// If there is none, or on a driver error.
    pub fn find(&self, css: &str) -> Result<Element<'_>> {
        let value = self.session_call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        )?;
        let id = value[ELEMENT_KEY]
            .as_str()
            .with_context(|| format!("no element reference for `{css}`"))?;
        Ok(Element {
            browser: self,
            id: id.to_string(),
        })
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page; returns its value.
    ///
    /// # Errors
    /// If the script throws, or on a driver error.
    pub fn execute(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// The page's visible text.
    ///
    /// # Errors
    /// On a driver error.
    pub fn text(&self) -> Result<String> {
        Ok(self
            .execute(
                "return document.body ? document.body.innerText : '';",
                vec![],
            )?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Saves a PNG screenshot of the viewport to `path`.
    ///
    /// # Errors
    /// On a driver error or if the file cannot be written.
    pub fn screenshot(&self, path: &Path) -> Result<()> {
        let data = self.session_call("GET", "/screenshot", None)?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().context("screenshot is not a string")?)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png)?;
        Ok(())
    }

    /// Saves a PNG screenshot of the whole page (the window grown to the page's height, at most
    /// `max_height` pixels, then put back) to `path`.
    ///
    /// # Errors
    /// On a driver error or if the file cannot be written.
    pub fn screenshot_full(&self, path: &Path, max_height: u64) -> Result<()> {
        let sizes = self.execute(
            "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight, window.outerWidth, window.outerHeight];",
            vec![],
        )?;
        let number = |i: usize| sizes[i].as_u64().unwrap_or(0);
        let (page, chrome, width, height) = (number(0), number(1), number(2), number(3));
        let full = (page + chrome).min(max_height);
        let as_u32 = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        self.resize(as_u32(width), as_u32(full))?;
        let shot = self.screenshot(path);
        self.resize(as_u32(width), as_u32(height))?;
        shot
    }

    /// Polls `check` every [`POLL_INTERVAL`] until it returns `Some`, for at most `timeout`;
    /// errors from `check` count as "not yet" (the page may be between two loads).
    ///
    /// # Errors
    /// After `timeout`, naming `what` and the last error or the page's text.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Browser) -> Result<Option<T>>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        let rounds = timeout.as_millis() / POLL_INTERVAL.as_millis() + 1;
        let mut last = String::new();
        for _ in 0..rounds {
            match check(self) {
                Ok(Some(value)) => return Ok(value),
                Ok(None) => {}
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        let page = self.text().unwrap_or_default();
        bail!("timed out after {timeout:?} waiting for {what} (last error: {last}); the page says:\n{page}")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.session_call("DELETE", "", None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// An element of the current page.
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl Element<'_> {
    fn call(&self, method: &str, what: &str, body: Option<Value>) -> Result<Value> {
        self.browser
            .session_call(method, &format!("/element/{}{what}", self.id), body)
    }

    /// Clicks it.
    ///
    /// # Errors
    /// On a driver error (for example the element is hidden).
    pub fn click(&self) -> Result<()> {
        self.call("POST", "/click", Some(json!({})))?;
        Ok(())
    }

    /// Empties an input or textarea.
    ///
    /// # Errors
    /// On a driver error.
    pub fn clear(&self) -> Result<()> {
        self.call("POST", "/clear", Some(json!({})))?;
        Ok(())
    }

    /// Types `text` into it.
    ///
    /// # Errors
    /// On a driver error.
    pub fn type_text(&self, text: &str) -> Result<()> {
        self.call("POST", "/value", Some(json!({ "text": text })))?;
        Ok(())
    }

    /// Its rendered text.
    ///
    /// # Errors
    /// On a driver error.
    pub fn text(&self) -> Result<String> {
        Ok(self
            .call("GET", "/text", None)?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }
}

//! A small W3C WebDriver client over reqwest (the protocol is a handful of
//! JSON requests; no new crate), and the chromedriver process it talks to:
//! headless Chromium for the console's browser tests.
//!
//! Waiting is always on a condition polled with a deadline, never a sleep.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use pushwerk_testkit::daemon::free_port;
use serde_json::{json, Value};

/// The W3C element identifier key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The time zone the browser runs in.
pub const BROWSER_TZ: &str = "Asia/Kolkata";

/// A running chromedriver; killed when dropped.
pub struct Driver {
    child: Child,
    base: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where chromedriver is, or why the browser tests cannot run.
fn chromedriver() -> PathBuf {
    for candidate in ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("chromedriver");
            if p.exists() {
                return p;
            }
        }
    }
    panic!(
        "chromedriver is not installed: the console's browser tests need Debian's \
         `chromium` and `chromium-driver` (`apt-get install -y chromium chromium-driver`; .ci/run does)"
    );
}

impl Driver {
    /// Starts chromedriver on a free port and waits until it is ready.
    pub async fn start() -> Driver {
        let binary = chromedriver();
        let http = pushwerk::net::http_client().build().expect("HTTP client");
        for _ in 0..3 {
            let port = free_port();
            let child = Command::new(&binary)
                .arg(format!("--port={port}"))
                // The browser's time zone (UTC+5:30 all year), so that a
                // test sees times converted to it, not shown in UTC.
                .env("TZ", BROWSER_TZ)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver starts");
            let mut driver = Driver {
                child,
                base: format!("http://127.0.0.1:{port}"),
                _profile: tempfile::tempdir().expect("profile dir"),
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = driver.child.try_wait() {
                    break; // the port was taken: try another
                }
                if let Ok(r) = http.get(format!("{}/status", driver.base)).send().await {
                    if let Ok(v) = r.json::<Value>().await {
                        if v["value"]["ready"] == json!(true) {
                            return driver;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = driver.child.kill();
        }
        panic!("chromedriver did not become ready");
    }

    /// A new headless Chromium session with a window of `width`×`height`.
    pub async fn session(&self, width: u32, height: u32) -> Browser {
        let http = pushwerk::net::http_client().build().expect("HTTP client");
        let profile = self._profile.path().join(format!("p{}", free_port()));
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", "--no-first-run", "--hide-scrollbars", "--lang=en-US",
                        format!("--user-data-dir={}", profile.display()),
                        format!("--window-size={width},{height}"),
                    ]
                }
            }}
        });
        let r: Value = http
            .post(format!("{}/session", self.base))
            .json(&caps)
            .send()
            .await
            .expect("new session request")
            .json()
            .await
            .expect("new session answer");
        let id = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_owned();
        let browser = Browser {
            http,
            url: format!("{}/session/{id}", self.base),
        };
        browser.resize(width, height).await;
        browser
    }
}

/// One WebDriver session (a browser window).
pub struct Browser {
    http: reqwest::Client,
    url: String,
}

/// An element of the page.
#[derive(Clone)]
pub struct Element(String);

impl Browser {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let answer: Value = req
            .send()
            .await
            .expect("webdriver request")
            .json()
            .await
            .expect("webdriver answer");
        answer["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let v = self.call(reqwest::Method::POST, path, Some(body)).await;
        if let Some(e) = v.get("error") {
            panic!("webdriver {path}: {e}: {}", v["message"]);
        }
        v
    }

    /// Sets the window's size (CSS pixels of the viewport at device scale 1).
    pub async fn resize(&self, width: u32, height: u32) {
        self.post("/window/rect", json!({ "width": width, "height": height }))
            .await;
    }

    /// Opens `url` (waits for the page's load event).
    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    /// The current URL.
    pub async fn current_url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
            .await
    }

    /// Runs `script`, whose last argument is the callback to call with the result.
    pub async fn execute_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.post("/execute/async", json!({ "script": script, "args": args }))
            .await
    }

    /// The elements matching `css` now.
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/elements",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(|s| Element(s.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits (up to 15 s) for an element matching `css`.
    pub async fn find(&self, css: &str) -> Element {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(e) = self.find_all(css).await.into_iter().next() {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no element `{css}` on {}: {}",
                self.current_url().await,
                self.body_text().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks `element`.
    pub async fn click(&self, element: &Element) {
        self.post(&format!("/element/{}/click", element.0), json!({}))
            .await;
    }

    /// Clears `element` (an input) and types `text` into it.
    pub async fn type_into(&self, element: &Element, text: &str) {
        self.post(&format!("/element/{}/clear", element.0), json!({}))
            .await;
        self.post(
            &format!("/element/{}/value", element.0),
            json!({ "text": text }),
        )
        .await;
    }

    /// The rendered text of `element`.
    pub async fn text(&self, element: &Element) -> String {
        self.call(
            reqwest::Method::GET,
            &format!("/element/{}/text", element.0),
            None,
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// The page's visible text.
    pub async fn body_text(&self) -> String {
        match self.find_all("body").await.into_iter().next() {
            Some(b) => self.text(&b).await,
            None => String::new(),
        }
    }

    /// Waits (up to `within`) until the text of the element matching `css`
    /// satisfies `ok`; returns that text.
    pub async fn wait_text(
        &self,
        css: &str,
        within: Duration,
        what: &str,
        ok: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + within;
        let mut last = String::new();
        loop {
            if let Some(e) = self.find_all(css).await.into_iter().next() {
                last = self.text(&e).await;
                if ok(&last) {
                    return last;
                }
            }
            assert!(
                Instant::now() < deadline,
                "waited for {what} in `{css}`; last text: {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a PNG screenshot of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("a base64 screenshot"))
            .expect("base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }

    /// Grants or denies a permission (`clipboard-read`, …) to the page's
    /// origin; false when the driver does not support it.
    pub async fn set_permission(&self, name: &str, state: &str) -> bool {
        let v = self
            .call(
                reqwest::Method::POST,
                "/permissions",
                Some(json!({ "descriptor": { "name": name }, "state": state })),
            )
            .await;
        v.get("error").is_none()
    }

    /// Ends the session (closes the browser).
    pub async fn quit(self) {
        let _ = self.http.delete(&self.url).send().await;
    }
}

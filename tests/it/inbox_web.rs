//! The web inbox against the real binary: curl (a real client, with a cookie jar) logs in
//! over HTTPS on `[inbox] web_listen`, lists, views, downloads the whole message (byte for
//! byte the stored one) and an attachment, deletes and logs out; a wrong password, a form
//! without the session's token and a cross-site login are refused; another user gets 404
//! for the first one's message; the lockout is the IMAP side's. Headless Chromium, driven
//! over the DevTools protocol, logs in through the real form on the admin listener (plain
//! HTTP on loopback), opens a message whose HTML carries `<script>`, and shows in the DOM
//! that nothing of it ran while the HTML part and the attachment link render; a screenshot
//! is saved.

use crate::common::*;
use crate::inbox::{Inbox, start_with};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A message with an HTML part that tries everything a sanitizer must stop, a plain text
/// alternative, and a PDF attachment with a hostile file name.
const RICH: &str = "From: Sender <s@sender.test>\r\nTo: jo@example.test\r\nSubject: Report\r\nMessage-ID: <rich@sender.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: multipart/alternative; boundary=\"b2\"\r\n\r\n--b2\r\nContent-Type: text/plain\r\n\r\nHello there (plain)\r\n--b2\r\nContent-Type: text/html\r\n\r\n<p>Hello <b id=\"greeting\">there</b></p><script>document.title='pwned';document.body.insertAdjacentHTML('beforeend','<p id=\"injected\">script ran</p>')</script><img src=\"http://192.0.2.99/track.png\" onerror=\"document.title='pwned by onerror'\" alt=\"tracker\"><form action=\"http://192.0.2.99/\"><input name=\"p\"></form><iframe src=\"http://192.0.2.99/\"></iframe><a href=\"https://example.org/\" onclick=\"document.title='pwned by click'\">a link</a>\r\n--b2--\r\n--b1\r\nContent-Type: application/pdf; name=\"../../etc/pass wd.pdf\"\r\nContent-Disposition: attachment; filename=\"../../etc/pass wd.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcOkw7zDtsOfCg==\r\n--b1--\r\n";

/// What the attachment decodes to.
const PDF: &[u8] = b"%PDF-1.4\n%\xc3\xa4\xc3\xbc\xc3\xb6\xc3\x9f\n";

/// mx2 with the inbox on for example.test, the web inbox on its own HTTPS port, and an
/// admin token (the inbox's pages must not need it); jo and al have passwords.
fn start(max_failures: u32) -> (Inbox, u16, tempfile::TempDir) {
    let secrets = tempfile::tempdir().unwrap();
    let token = secrets.path().join("admin.token");
    std::fs::write(&token, format!("{ADMIN_TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let web = free_port();
    let ib = start_with(
        free_port(),
        "",
        max_failures,
        &format!("web_listen = \"127.0.0.1:{web}\"\n"),
        &format!(
            "[admin]\nlisten = \"127.0.0.1:{}\"\ntoken_file = \"{}\"\n",
            free_port(),
            token.display()
        ),
    );
    ib.passwd("jo@example.test", "jo-secret");
    ib.passwd("al@example.test", "al-secret");
    (ib, web, secrets)
}

fn send(ib: &Inbox, to: &str, content: &str) {
    let mut c = ib.mx2.client();
    c.cmd("EHLO client.test");
    let r = c.send_mail("s@sender.test", &[to], content.as_bytes());
    assert!(r.starts_with("250"), "{r}");
}

/// One browser's worth of curl: its own cookie jar.
struct Browser<'a> {
    base: String,
    ca: &'a Path,
    dir: tempfile::TempDir,
}

/// An answer: status, header block (lower case), body.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            (n.trim() == name).then(|| v.trim().to_string())
        })
    }
}

impl<'a> Browser<'a> {
    fn new(base: String, ca: &'a Path) -> Self {
        Self {
            base,
            ca,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A request; `form`: POST these fields (URL-encoded), with `extra` headers.
    fn go(&self, path: &str, form: Option<&[(&str, &str)]>, extra: &[&str]) -> Answer {
        let jar = self.dir.path().join("jar");
        let (head, body) = (self.dir.path().join("head"), self.dir.path().join("body"));
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-S", "--max-time", "20", "--cacert"])
            .arg(self.ca)
            .arg("-b")
            .arg(&jar)
            .arg("-c")
            .arg(&jar)
            .arg("-D")
            .arg(&head)
            .arg("-o")
            .arg(&body);
        for h in extra {
            cmd.args(["-H", h]);
        }
        for (k, v) in form.unwrap_or(&[]) {
            cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
        }
        let out = cmd
            .arg(format!("{}{path}", self.base))
            .output()
            .expect("curl must be installed");
        assert!(
            out.status.success(),
            "curl {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let head = std::fs::read_to_string(&head).unwrap().to_lowercase();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap();
        Answer {
            status,
            head,
            body: std::fs::read(&body).unwrap_or_default(),
        }
    }

    fn get(&self, path: &str) -> Answer {
        self.go(path, None, &[])
    }

    fn login(&self, address: &str, password: &str) -> Answer {
        self.go(
            "/inbox/login",
            Some(&[("address", address), ("password", password)]),
            &[],
        )
    }
}

/// The queue ids the list links to, in the list's order.
fn ids(list: &str) -> Vec<String> {
    list.split("href=\"/inbox/m/")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(str::to_string)
        .collect()
}

/// The session's form token on a page.
fn csrf(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a token");
    page[at + 19..].split('"').next().unwrap().to_string()
}

#[test]
fn web_inbox_over_https() {
    let (ib, web, _secrets) = start(3);
    send(&ib, "jo@example.test", RICH);
    let plain = "From: s@sender.test\r\nTo: jo@example.test\r\nSubject: Later <one>\r\n\r\nplain body & more\r\n";
    send(&ib, "Jo+news@example.test", plain);
    send(
        &ib,
        "al@example.test",
        "From: s@sender.test\r\nSubject: ForAl\r\n\r\nal's\r\n",
    );
    let base = format!("https://127.0.0.1:{web}");
    let jo = Browser::new(base.clone(), &ib.ca);

    // Before login: the login form, with the strict policy on every answer.
    let page = jo.get("/inbox/");
    assert_eq!(page.status, 200);
    assert!(
        page.text().contains("action=\"/inbox/login\""),
        "{}",
        page.text()
    );
    let csp = page.header("content-security-policy").unwrap();
    for part in [
        "default-src 'none'",
        "style-src 'self'",
        "img-src data:",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert_eq!(jo.get("/").status, 303, "/ leads to /inbox/");
    let css = jo.get("/inbox/style.css");
    assert!(css.status == 200 && css.header("content-security-policy").is_some());

    // A wrong password, and a login posted from another site, are refused.
    let wrong = jo.login("jo@example.test", "al-secret");
    assert_eq!(wrong.status, 401);
    assert!(wrong.text().contains("Wrong address or password"));
    assert!(wrong.header("set-cookie").is_none());
    let forged = jo.go(
        "/inbox/login",
        Some(&[("address", "jo@example.test"), ("password", "jo-secret")]),
        &["Origin: https://evil.example", "Sec-Fetch-Site: cross-site"],
    );
    assert_eq!(forged.status, 403, "{}", forged.text());

    // Login: a session cookie for /inbox/ only, unreadable to scripts, Secure over TLS.
    let ok = jo.login("JO@Example.test", "jo-secret");
    assert_eq!(
        (ok.status, ok.header("location").as_deref()),
        (303, Some("/inbox/"))
    );
    let cookie = ok.header("set-cookie").unwrap();
    for attr in ["path=/inbox/", "httponly", "samesite=strict", "secure"] {
        assert!(cookie.contains(attr), "{cookie}");
    }

    // The list: jo's two messages, newest first, escaped.
    let list = jo.get("/inbox/");
    let text = list.text();
    assert_eq!(list.status, 200);
    assert!(!text.contains("ForAl"), "al's mail is not jo's: {text}");
    assert!(
        !text.contains("Later <one>"),
        "the subject is escaped: {text}"
    );
    let later = text
        .find("Later &lt;one&gt;")
        .or_else(|| text.find("Later &#60;one&#62;"));
    let later = later.unwrap_or_else(|| panic!("the escaped subject: {text}"));
    let report = text
        .find(">Report<")
        .unwrap_or_else(|| panic!("the rich message: {text}"));
    assert!(later < report, "newest first: {text}");
    let listed = ids(&text);
    assert_eq!(listed.len(), 2, "{text}");
    let (plain_id, rich_id) = (listed[0].clone(), listed[1].clone());
    assert!(text.contains("class=\"unread\""));

    // The view: the sanitized HTML, the attachment as a download link.
    let view = jo.get(&format!("/inbox/m/{rich_id}"));
    let v = view.text();
    assert_eq!(view.status, 200, "{v}");
    // The message's part of the page: its sanitized HTML.
    let body = v.split("id=\"body\">").nth(1).unwrap_or_default();
    let body = body.split("</div>").next().unwrap_or_default();
    assert!(body.contains("Hello <b>there</b>"), "{v}");
    for bad in [
        "<script",
        "pwned",
        "onerror",
        "onclick",
        "192.0.2.99",
        "<iframe",
        "<input",
        "<form",
        "src=",
    ] {
        assert!(!body.contains(bad), "{bad} in the message: {body}");
    }
    assert!(!v.contains("<script") && !v.contains("pwned"), "{v}");
    let link = format!("/inbox/m/{rich_id}/a/0");
    assert!(v.contains(&link) && v.contains(">pass_wd.pdf<"), "{v}");
    let plain_view = jo.get(&format!("/inbox/m/{plain_id}")).text();
    assert!(
        plain_view.contains("plain body &amp; more")
            || plain_view.contains("plain body &#38; more"),
        "the text, escaped: {plain_view}"
    );
    assert!(
        !jo.get("/inbox/").text().contains("class=\"unread\""),
        "viewing marks a message read (as an IMAP read does)"
    );

    // Downloads: the whole message byte for byte as stored, the attachment decoded, both
    // as attachments of an inert type.
    let eml = jo.get(&format!("/inbox/m/{rich_id}/eml"));
    assert_eq!(eml.status, 200);
    let (_, stored) = crate::common::http::http(
        "GET",
        &format!("{}/api/v1/queue/{rich_id}/eml", ib.mx2.admin_url()),
        Some(ADMIN_TOKEN),
        None,
    );
    assert!(
        stored.ends_with(RICH),
        "the operator's export is the stored message"
    );
    assert_eq!(eml.body, stored.as_bytes(), "the .eml is the held message");
    assert_eq!(
        eml.header("content-type").as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(
        eml.header("content-disposition"),
        Some(format!("attachment; filename=\"{rich_id}.eml\""))
    );
    let pdf = jo.get(&link);
    assert_eq!((pdf.status, pdf.body.as_slice()), (200, PDF));
    assert_eq!(
        pdf.header("content-disposition").as_deref(),
        Some("attachment; filename=\"pass_wd.pdf\"")
    );
    assert_eq!(
        pdf.header("content-type").as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(jo.get(&format!("/inbox/m/{rich_id}/a/1")).status, 404);

    // Another user: jo's message ids are "not found", whatever is asked of them.
    let al = Browser::new(base.clone(), &ib.ca);
    assert_eq!(al.login("al@example.test", "al-secret").status, 303);
    let al_list = al.get("/inbox/").text();
    assert!(
        al_list.contains("ForAl") && !al_list.contains("Report"),
        "{al_list}"
    );
    for path in ["", "/eml", "/a/0"] {
        let r = al.get(&format!("/inbox/m/{rich_id}{path}"));
        assert_eq!(r.status, 404, "al asking for jo's {path}");
        assert!(!r.body.windows(6).any(|w| w == b"Report"));
    }
    let al_csrf = csrf(&al_list);
    let r = al.go(
        &format!("/inbox/m/{rich_id}/delete"),
        Some(&[("csrf", al_csrf.as_str())]),
        &[],
    );
    assert_eq!(r.status, 404, "al cannot delete jo's message");

    // Delete: not without the session's token; with it, gone from the list.
    let token = csrf(&jo.get("/inbox/").text());
    let r = jo.go(
        &format!("/inbox/m/{plain_id}/delete"),
        Some(&[("csrf", "forged")]),
        &[],
    );
    assert_eq!(r.status, 403);
    let r = jo.go(
        &format!("/inbox/m/{plain_id}/delete"),
        Some(&[("csrf", token.as_str())]),
        &[],
    );
    assert_eq!(r.status, 303);
    assert_eq!(
        ids(&jo.get("/inbox/").text()),
        std::slice::from_ref(&rich_id)
    );

    // Every login and read is in the event log.
    let (_, events) = crate::common::http::http(
        "GET",
        &format!("{}/api/v1/events", ib.mx2.admin_url()),
        Some(ADMIN_TOKEN),
        None,
    );
    let events: serde_json::Value = serde_json::from_str(&events).unwrap();
    let has = |want: serde_json::Value| {
        events["events"].as_array().unwrap().iter().any(|e| {
            want.as_object()
                .unwrap()
                .iter()
                .all(|(k, v)| e.get(k) == Some(v))
        })
    };
    use serde_json::json;
    let jo_in =
        json!({"event": "inbox_login", "address": "jo@example.test", "ok": true, "detail": "web"});
    assert!(has(jo_in), "{events}");
    let refused = json!({"event": "inbox_login", "ok": false, "detail": "web: wrong password"});
    assert!(has(refused), "{events}");
    let read = json!({"event": "inbox_read", "address": "jo@example.test", "queue_id": rich_id});
    assert!(has(read), "{events}");

    // Logout ends the session on the server: the old cookie shows the login page.
    let r = jo.go("/inbox/logout", Some(&[("csrf", token.as_str())]), &[]);
    assert_eq!(r.status, 303);
    assert!(jo.get("/inbox/").text().contains("action=\"/inbox/login\""));
    for page in ["", "/eml", "/a/0"] {
        let r = jo.get(&format!("/inbox/m/{rich_id}{page}"));
        assert_eq!(
            (r.status, r.header("location").as_deref()),
            (303, Some("/inbox/")),
            "{page} without a session"
        );
    }

    // The lockout is the IMAP side's: after 3 failures even the right password waits.
    let stranger = Browser::new(base, &ib.ca);
    for _ in 0..3 {
        assert_eq!(stranger.login("jo@example.test", "guess").status, 401);
    }
    let locked = stranger.login("jo@example.test", "jo-secret");
    assert_eq!(locked.status, 429);
    assert!(
        locked.text().contains("Too many failed logins"),
        "{}",
        locked.text()
    );

    // On the admin listener the inbox needs no admin token (the API does).
    let admin = ib.mx2.admin_url();
    let (code, page) = crate::common::http::http("GET", &format!("{admin}/inbox/"), None, None);
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains("action=\"/inbox/login\""),
        "loopback: the form is offered"
    );
    let (code, _) = crate::common::http::http("GET", &format!("{admin}/api/v1/status"), None, None);
    assert_eq!(code, 401);
}

/// Headless Chromium, or None (loudly) when it is missing outside CI; in CI it must be
/// there (.ci/run installs it).
fn chromium() -> Option<&'static str> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Chromium is needed for this test in CI: .ci/run installs it (apt-get install chromium)"
        );
        eprintln!(
            "\n*** SKIPPED web_inbox_in_chromium: Chromium is not installed (apt-get install chromium) ***\n"
        );
    }
    found
}

/// A Chromium process, ended when dropped.
struct Browserd(Child);

impl Drop for Browserd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A DevTools protocol connection to one page.
struct DevTools {
    ws: tungstenite::WebSocket<TcpStream>,
    next: u64,
}

impl DevTools {
    /// Calls `method`; its result (events met while waiting are dropped, a load noted).
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next += 1;
        let id = self.next;
        let msg = serde_json::json!({ "id": id, "method": method, "params": params });
        self.ws
            .send(tungstenite::Message::text(msg.to_string()))
            .unwrap();
        loop {
            let m = self.read();
            if m["id"] == id {
                assert!(m.get("error").is_none(), "{method}: {m}");
                return m["result"].clone();
            }
        }
    }

    fn read(&mut self) -> serde_json::Value {
        loop {
            match self.ws.read().expect("DevTools connection") {
                tungstenite::Message::Text(t) => return serde_json::from_str(&t).unwrap(),
                _ => continue,
            }
        }
    }

    /// Runs `action` and waits until the page it leads to has loaded.
    fn load(&mut self, method: &str, params: serde_json::Value) {
        self.call(method, params);
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(Instant::now() < until, "no page load after {method}");
            let m = self.read();
            if m["method"] == "Page.loadEventFired" {
                return;
            }
        }
    }

    /// A JavaScript expression's value in the page (DevTools' own evaluation, which the
    /// page's policy does not govern; the page itself runs none).
    fn eval(&mut self, expression: &str) -> serde_json::Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({ "expression": expression, "returnByValue": true }),
        );
        r["result"]["value"].clone()
    }
}

/// Starts Chromium with remote debugging on loopback; the process and a connection to its
/// page.
fn launch(chromium: &str, profile: &Path) -> (Browserd, DevTools) {
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1200,900",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let browser = Browserd(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("DevTools listening on ") {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    let browser_ws = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("Chromium prints its DevTools address");
    let port = browser_ws
        .strip_prefix("ws://127.0.0.1:")
        .and_then(|r| r.split('/').next())
        .expect("a loopback DevTools address")
        .to_string();
    // The page target's own socket.
    let mut page_ws = None;
    wait_until("Chromium's page target", Duration::from_secs(10), || {
        // curl: Chromium's DevTools HTTP server keeps the connection open.
        let out = Command::new("curl")
            .args(["-s", "--max-time", "5"])
            .arg(format!("http://127.0.0.1:{port}/json/list"))
            .output()
            .expect("curl must be installed");
        let list = String::from_utf8_lossy(&out.stdout);
        let targets: serde_json::Value = serde_json::from_str(&list).unwrap_or_default();
        page_ws = targets.as_array().and_then(|t| {
            t.iter()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_string))
        });
        page_ws.is_some()
    });
    let url = page_ws.unwrap();
    let stream = TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let (ws, _) = tungstenite::client::client(url.as_str(), stream).expect("DevTools websocket");
    let mut dt = DevTools { ws, next: 0 };
    dt.call("Page.enable", serde_json::json!({}));
    (browser, dt)
}

#[test]
fn web_inbox_in_chromium() {
    let Some(chromium) = chromium() else {
        return;
    };
    let (ib, _web, _secrets) = start(5);
    send(&ib, "jo@example.test", RICH);
    let admin = ib.mx2.admin_url();
    let profile = tempfile::tempdir().unwrap();
    let (_browser, mut dt) = launch(chromium, profile.path());

    // Log in through the real form (plain HTTP, on loopback).
    dt.load(
        "Page.navigate",
        serde_json::json!({ "url": format!("{admin}/inbox/") }),
    );
    assert_eq!(dt.eval("document.forms.length"), 1, "the login form");
    dt.eval("document.querySelector('input[name=address]').value = 'jo@example.test'");
    dt.eval("document.querySelector('input[name=password]').value = 'jo-secret'");
    // submit() is what pressing the button does, without a click's coordinates.
    dt.call(
        "Runtime.evaluate",
        serde_json::json!({ "expression": "document.getElementById('login').submit()" }),
    );
    let until = Instant::now() + Duration::from_secs(20);
    while dt.eval("document.getElementById('messages') !== null") != true {
        assert!(
            Instant::now() < until,
            "the list after login: {}\nmx2 log:\n{}",
            dt.eval("location.href + ' ' + document.documentElement.outerHTML"),
            ib.mx2.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let href = dt.eval("document.querySelector('#messages a').getAttribute('href')");
    let href = href.as_str().expect("a message link").to_string();
    assert!(href.starts_with("/inbox/m/"), "{href}");

    // The message: the HTML part renders, its script and handlers did not run.
    dt.load(
        "Page.navigate",
        serde_json::json!({ "url": format!("{admin}{href}") }),
    );
    let dom = dt.eval("document.documentElement.outerHTML");
    let dom = dom.as_str().unwrap_or_default().to_string();
    let title = dt.eval("document.title");
    assert!(
        title
            .as_str()
            .unwrap_or("")
            .starts_with("Report · emergency inbox"),
        "{title}: {dom}"
    );
    assert_eq!(
        dt.eval("document.getElementById('injected')"),
        serde_json::Value::Null
    );
    assert_eq!(
        dt.eval(
            "document.querySelectorAll('script, iframe, object, #body form, #body input').length"
        ),
        0
    );
    assert_eq!(
        dt.eval("document.querySelector('#body b').textContent"),
        "there",
        "{dom}"
    );
    assert_eq!(
        dt.eval("Array.from(document.querySelectorAll('#body img')).filter(i => i.hasAttribute('src')).length"),
        0,
        "no image source: {dom}"
    );
    assert_eq!(
        dt.eval("document.querySelector('#attachments a').textContent"),
        "pass_wd.pdf",
        "{dom}"
    );
    assert_eq!(
        dt.eval("document.querySelector('#attachments a').getAttribute('href')"),
        format!("{href}/a/0")
    );
    assert!(
        !dom.contains("pwned") && !dom.contains("script ran"),
        "{dom}"
    );

    let shot = dt.call(
        "Page.captureScreenshot",
        serde_json::json!({ "format": "png" }),
    );
    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "{} bytes",
        png.len()
    );
    let dir: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR")).join("inbox-web");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("message.png");
    std::fs::write(&path, &png).unwrap();
    println!("web inbox screenshot: {}", path.display());
}

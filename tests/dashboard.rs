//! The dashboard in a real browser: the real `mdn serve` on a free loopback port, headless
//! Chromium driven through chromedriver (WebDriver). Screenshots of each page go to
//! `MDN_SCREENSHOT_DIR` (default: `target/tmp/dashboard`). Without Chromium the tests print
//! `SKIPPED ...`, and fail when `MDN_REQUIRE_BROWSER=1` (as on CI).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::serve::{Server, asset};
use common::which;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// chromedriver on a free port and a headless Chromium session, or None (with a SKIPPED
/// line) when they are not installed.
async fn browser() -> Option<(Proc, Client)> {
    let driver = which("chromedriver");
    let chrome = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|n| which(n));
    let (Some(driver), Some(chrome)) = (driver, chrome) else {
        if std::env::var("MDN_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
            panic!("MDN_REQUIRE_BROWSER=1 but chromium or chromedriver is not installed");
        }
        eprintln!(
            "SKIPPED a browser test: chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver)"
        );
        return None;
    };
    let port = common::free_port();
    let proc = Proc(
        Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let caps: serde_json::Map<String, Value> = serde_json::from_value(json!({
        "browserName": "chrome",
        "goog:loggingPrefs": {"browser": "ALL"},
        "goog:chromeOptions": {
            "binary": chrome,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"]
        }
    }))
    .unwrap();
    let t0 = Instant::now();
    loop {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => return Some((proc, c)),
            Err(e) if t0.elapsed() < Duration::from_secs(20) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("chromedriver did not start a session: {e}"),
        }
    }
}

fn shots() -> PathBuf {
    let dir = std::env::var_os("MDN_SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(shots().join(name), png).unwrap();
}

/// Clicks the element with id `id`, trying again for 10 s while it is not interactable: a
/// page rendered again (an event refreshing it) replaces a shown button by a new one, hidden
/// until its status arrives (a clean-clone CI run caught "element not interactable" once).
async fn click_when_ready(c: &Client, id: &str) {
    let t0 = Instant::now();
    loop {
        let clicked = match c.find(Locator::Id(id)).await {
            Ok(e) => e.click().await.map(|_| ()),
            Err(e) => Err(e),
        };
        match clicked {
            Ok(()) => return,
            Err(_) if t0.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("#{id} could not be clicked: {e}"),
        }
    }
}

/// Waits until `script` (a JS expression) is truthy; panics with `what` after 60 s.
async fn until(c: &Client, what: &str, script: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let v = c
            .execute(&format!("return ({script});"), vec![])
            .await
            .unwrap_or(Value::Null);
        let truthy = match &v {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !s.is_empty(),
            _ => true,
        };
        if truthy {
            return v;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            let page = c.source().await.unwrap_or_default();
            panic!(
                "timed out waiting for {what} ({script}); page: {}",
                &page[..page.len().min(3000)]
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn errors(c: &Client) -> Value {
    c.execute("return window.__mdnErrors;", vec![])
        .await
        .unwrap()
}

/// chromedriver's `se/log`: the browser console's entries since the last call.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type": "browser"}"#.into()))
    }
}

/// The console's warnings and errors, less the answers to requests the test made bad on
/// purpose (`expected`: pieces of those log lines, such as "status of 400").
async fn console_problems(c: &Client, expected: &[&str]) -> Vec<String> {
    let log = c.issue_cmd(BrowserLog).await.unwrap();
    log.as_array()
        .into_iter()
        .flatten()
        .filter(|e| matches!(e["level"].as_str(), Some("SEVERE" | "WARNING")))
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .filter(|m| !expected.iter().any(|x| m.contains(x)))
        .collect()
}

/// Fills the model page's rows (and quantiles), presses Predict and waits for a row per line.
async fn predict(c: &Client, rows: &str, quantiles: Option<&str>) {
    let rows_box = c.wait().for_element(Locator::Id("rows")).await.unwrap();
    rows_box.clear().await.unwrap();
    rows_box.send_keys(rows).await.unwrap();
    if let Some(levels) = quantiles {
        let q = c.find(Locator::Id("quantiles")).await.unwrap();
        q.clear().await.unwrap();
        q.send_keys(levels).await.unwrap();
    }
    c.find(Locator::Css("#predict-form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        c,
        "the predictions",
        &format!(
            "document.querySelectorAll('table.predictions tbody tr').length === {}",
            rows.lines().count()
        ),
    )
    .await;
}

/// Types `key` into the page's key dialog (replacing what was there) and submits it.
async fn enter_key(c: &Client, key: &str) {
    let input = c.find(Locator::Id("token-input")).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(key).await.unwrap();
    c.find(Locator::Css("#token-form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

fn api(base: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let a: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{base}{path}");
    let mut r = match body {
        Some(b) if method == "PUT" => a.put(&url).send_json(b).unwrap(),
        Some(b) => a.post(&url).send_json(b).unwrap(),
        None if method == "POST" => a.post(&url).send_empty().unwrap(),
        None => a.get(&url).call().unwrap(),
    };
    r.body_mut().read_json().unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_train_watch_inspect_predict_and_cancel_in_a_browser() {
    let Some((_driver, c)) = browser().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("store"), &[], &[]);
    let base = server.base.clone();

    // A bad upload (a ragged row; a data set keeps its cells as they are, so a cell is
    // judged only when a job reads it): the server's message next to the file field.
    c.goto(&format!("{base}/#/new")).await.unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "x,y\n1,2\n3\n").unwrap();
    let file = c.wait().for_element(Locator::Id("f-file")).await.unwrap();
    file.send_keys(bad.to_str().unwrap()).await.unwrap();
    let msg = until(
        &c,
        "the upload error",
        "document.getElementById('err-file').textContent",
    )
    .await;
    assert!(
        msg.as_str()
            .unwrap()
            .contains("bad.csv:3: row has 1 fields but the header has 2"),
        "{msg}"
    );
    shot(&c, "new-job-bad-upload.png").await;

    // The shipped example: its columns, then a job.
    let file = c.find(Locator::Id("f-file")).await.unwrap();
    file.send_keys(asset("bishop.csv").to_str().unwrap())
        .await
        .unwrap();
    until(
        &c,
        "the column picker",
        "!document.getElementById('columns').hidden",
    )
    .await;
    let picked = c
        .execute(
            "return [...document.querySelectorAll('#columns input:checked')].map(i => i.className + ':' + i.value);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(picked, json!(["feature:x", "target:t"]));
    // A bad option: the server's message next to its field.
    c.find(Locator::Id("f-batch_size"))
        .await
        .unwrap()
        .send_keys("0")
        .await
        .unwrap();
    c.find(Locator::Id("submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let msg = until(
        &c,
        "the batch size error",
        "document.getElementById('err-batch_size').textContent",
    )
    .await;
    assert!(msg.as_str().unwrap().contains("batch"), "{msg}");
    shot(&c, "new-job-bad-option.png").await;
    c.find(Locator::Id("f-batch_size"))
        .await
        .unwrap()
        .clear()
        .await
        .unwrap();
    c.find(Locator::Id("f-epochs"))
        .await
        .unwrap()
        .send_keys("1500")
        .await
        .unwrap();
    c.find(Locator::Id("f-hidden"))
        .await
        .unwrap()
        .clear()
        .await
        .unwrap();
    c.find(Locator::Id("f-hidden"))
        .await
        .unwrap()
        .send_keys("32")
        .await
        .unwrap();
    c.find(Locator::Id("submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // The job's page: the curve gains points while the job runs.
    until(&c, "the job page", "location.hash.startsWith('#/jobs/')").await;
    let job = c
        .execute("return location.hash.slice(7);", vec![])
        .await
        .unwrap();
    let job = job.as_str().unwrap().to_string();
    let first = until(
        &c,
        "points on the curve",
        "Number(document.querySelector('svg.chart')?.dataset.points || 0)",
    )
    .await;
    let first = first.as_u64().unwrap();
    let later = until(
        &c,
        "more points on the curve",
        &format!("Number(document.querySelector('svg.chart').dataset.points) > {first} && Number(document.querySelector('svg.chart').dataset.points)"),
    )
    .await;
    assert!(later.as_u64().unwrap() > first);
    shot(&c, "job-running.png").await;

    // Finished: figures, component usage, download.
    until(
        &c,
        "success",
        "document.querySelector('#job-status .badge')?.textContent === 'succeeded'",
    )
    .await;
    for panel in ["density", "pit", "reliability"] {
        until(
            &c,
            &format!("the {panel} figure"),
            &format!("(() => {{ const i = document.querySelector('img[data-panel={panel}]'); return i && i.complete && i.naturalWidth > 0; }})()"),
        )
        .await;
    }
    let rows = c
        .execute(
            "return document.querySelectorAll('#usage tbody tr').length;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(rows, json!(5));
    until(
        &c,
        "the download link",
        "document.getElementById('download').href.startsWith('blob:')",
    )
    .await;
    let points = c
        .execute(
            "return Number(document.querySelector('svg.chart').dataset.points);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(points, json!(1500));
    c.execute("window.scrollTo(0, 0)", vec![]).await.unwrap();
    shot(&c, "job-finished.png").await;
    c.execute("document.getElementById('model').scrollIntoView()", vec![])
        .await
        .unwrap();
    shot(&c, "job-figures.png").await;

    // The figures are mdn plot's: the SVG the page shows is the server's drawing.
    let model = api(&base, "GET", &format!("/v1/jobs/{job}"), None)["model"]
        .as_str()
        .unwrap()
        .to_string();

    // A prediction on the model's page, as the API answers it.
    c.find(Locator::Id("predict-link"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    predict(&c, "0.2\n0.5", Some("0.25, 0.75")).await;
    let shown = c
        .execute("return document.querySelector('table.predictions tbody tr td:nth-child(2)').textContent;", vec![])
        .await
        .unwrap();
    let want = api(
        &base,
        "POST",
        &format!("/v1/models/{model}/predict"),
        Some(json!({"rows": [[0.2], [0.5]], "quantiles": [0.25, 0.75], "interval": 0.9})),
    );
    assert_eq!(
        shown,
        json!(format!(
            "{:.4}",
            want["rows"][0]["mean"][0].as_f64().unwrap()
        ))
    );
    // The quantile columns: 0.05 and 0.95 (the 90% interval), 0.25 and 0.75, in order.
    let heads = c
        .execute("return [...document.querySelectorAll('table.predictions th')].map(t => t.textContent).filter(t => t.includes(' q'));", vec![])
        .await
        .unwrap();
    assert_eq!(heads, json!(["t q0.05", "t q0.25", "t q0.75", "t q0.95"]));
    let q95 = c
        .execute("return document.querySelector('table.predictions tbody tr:nth-child(2) td:nth-child(7)').textContent;", vec![])
        .await
        .unwrap();
    assert_eq!(
        q95,
        json!(format!(
            "{:.4}",
            want["rows"][1]["quantiles"]["0.95"][0].as_f64().unwrap()
        ))
    );
    shot(&c, "model-predict.png").await;

    // The jobs list: a second job, cancelled from its row.
    let ds = api(&base, "GET", "/v1/datasets", None)["datasets"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let second = api(
        &base,
        "POST",
        "/v1/jobs",
        Some(json!({"dataset": ds, "options": {"epochs": 100000}})),
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    c.goto(&format!("{base}/#/")).await.unwrap();
    until(
        &c,
        "the running row",
        &format!("document.querySelector('tr[data-job={second}]')?.dataset.status === 'running'"),
    )
    .await;
    // The row names the data set (not its id), when it was submitted, and where it runs (the
    // list showed only ids, issue 24).
    until(
        &c,
        "the job's data set, time and worker",
        &format!(
            "(() => {{ const r = document.querySelector('tr[data-job={second}]'); \
             return r.querySelector('td.dataset').textContent === 'bishop.csv' \
             && /\\d\\d:\\d\\d/.test(r.querySelector('td.submitted').textContent) \
             && r.querySelector('td.device .worker').textContent.startsWith(' on '); }})()"
        ),
    )
    .await;
    until(
        &c,
        "live progress",
        &format!("Number(document.querySelector('tr[data-job={second}] progress').value) > 1"),
    )
    .await;
    shot(&c, "jobs.png").await;
    // On a phone's screen: nothing wider than the screen but the tables, which scroll.
    c.set_window_size(390, 844).await.unwrap();
    let fits = c
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        fits,
        json!(true),
        "the jobs page is wider than a phone's screen"
    );
    shot(&c, "jobs-phone.png").await;
    c.set_window_size(1280, 1000).await.unwrap();
    c.find(Locator::Css(&format!("tr[data-job={second}] button")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        &c,
        "the cancelled row",
        &format!("document.querySelector('tr[data-job={second}]')?.dataset.status === 'cancelled'"),
    )
    .await;
    // Filtered by status.
    c.find(Locator::Id("status-filter"))
        .await
        .unwrap()
        .select_by_value("succeeded")
        .await
        .unwrap();
    until(&c, "the filtered list", &format!("location.hash === '#/?status=succeeded' && !!document.querySelector('tr[data-job={job}]') && !document.querySelector('tr[data-job={second}]')")).await;

    // The cancelled job deleted from its page, after the browser's confirmation: the list
    // says so and no longer has it.
    c.goto(&format!("{base}/#/jobs/{second}")).await.unwrap();
    until(
        &c,
        "the delete button of a finished job",
        "!!document.getElementById('delete') && !document.getElementById('delete').hidden && document.getElementById('cancel').hidden",
    )
    .await;
    click_when_ready(&c, "delete").await;
    c.accept_alert().await.unwrap();
    let said = until(
        &c,
        "the jobs page after the deletion",
        &format!("(location.hash === '#/' && !!document.querySelector('tr[data-job={job}]') && !document.querySelector('tr[data-job={second}]')) ? document.getElementById('live').textContent : null"),
    )
    .await;
    assert!(
        said.as_str()
            .unwrap()
            .starts_with(&format!("job {second} deleted")),
        "{said}"
    );
    let (st, _) = server.call("GET", &format!("/v1/jobs/{second}"), None);
    assert_eq!(st, 404);

    // A deep ensemble's model page: the two parts of the standard deviation, as the API
    // answers them (x = 3 lies outside the data, where the members disagree more).
    let ens = api(
        &base,
        "POST",
        "/v1/jobs",
        Some(json!({"dataset": ds, "options": {"epochs": 3, "ensemble": 3, "hidden": "16"}})),
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    let ens_model = loop {
        let j = api(&base, "GET", &format!("/v1/jobs/{ens}"), None);
        match j["status"].as_str() {
            Some("succeeded") => break j["model"].as_str().unwrap().to_string(),
            Some("failed") | Some("cancelled") => panic!("the ensemble job ended: {j}"),
            _ => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    };
    c.goto(&format!("{base}/#/models/{ens_model}"))
        .await
        .unwrap();
    predict(&c, "0.5\n3", None).await;
    let heads = c
        .execute("return [...document.querySelectorAll('table.predictions th')].map(t => t.textContent).filter(t => t.endsWith(' sd'));", vec![])
        .await
        .unwrap();
    assert_eq!(heads, json!(["t aleatoric sd", "t epistemic sd"]));
    let want = api(
        &base,
        "POST",
        &format!("/v1/models/{ens_model}/predict"),
        Some(json!({"rows": [[0.5], [3.0]], "quantiles": [0.5]})),
    );
    let shown = c
        .execute("return document.querySelector('table.predictions tbody tr:nth-child(2) td:nth-child(5)').textContent;", vec![])
        .await
        .unwrap();
    assert_eq!(
        shown,
        json!(format!(
            "{:.4}",
            want["rows"][1]["epistemic_variance"][0]
                .as_f64()
                .unwrap()
                .sqrt()
        ))
    );
    shot(&c, "model-ensemble.png").await;

    assert_eq!(errors(&c).await, json!([]), "errors in the page");
    // The console: nothing but the two bad requests made on purpose (an upload and an
    // option the server refused with 400).
    let problems = console_problems(
        &c,
        &[
            "/v1/datasets?name=bad.csv",
            "/v1/jobs - Failed to load resource: the server responded with a status of 400",
        ],
    )
    .await;
    assert!(problems.is_empty(), "browser console: {problems:#?}");
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_token_the_page_asks_for_it_once_and_keeps_it_for_the_tab() {
    let Some((_driver, c)) = browser().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let token = "a-token-for-the-browser-test";
    let server = Server::start(&dir.path().join("store"), &[], &[("MDN_TOKEN", token)]);
    let base = server.base.clone();
    c.goto(&format!("{base}/#/")).await.unwrap();
    until(
        &c,
        "the token dialog",
        "document.getElementById('token-dialog').open",
    )
    .await;
    enter_key(&c, "wrong-token-0000000").await;
    until(
        &c,
        "the refusal",
        "document.getElementById('token-error').textContent.includes('refused')",
    )
    .await;
    enter_key(&c, token).await;
    until(
        &c,
        "the jobs page",
        "!!document.getElementById('jobs-empty') && !document.getElementById('token-dialog').open",
    )
    .await;
    // Kept for the tab: another page loads without asking.
    c.goto(&format!("{base}/#/new")).await.unwrap();
    c.refresh().await.unwrap();
    until(
        &c,
        "the new-job page",
        "!!document.getElementById('f-file')",
    )
    .await;
    let open = c
        .execute(
            "return document.getElementById('token-dialog').open;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(open, json!(false));
    // The page itself (and its scripts) load without the token; the API does not: its 401s
    // are the only complaints in the console.
    assert_eq!(errors(&c).await, json!([]));
    let problems = console_problems(&c, &["status of 401"]).await;
    assert!(problems.is_empty(), "browser console: {problems:#?}");
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_registry_pages_show_names_versions_and_aliases_to_a_workspace_key() {
    let Some((_driver, c)) = browser().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let server = Server::start(&store, &[], &[]);
    let base = server.base.clone();
    // Two versions of `bishop`, production on the first, trained before any key existed.
    let ds = server.upload(&asset("bishop.csv"), "bishop.csv")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut models = Vec::new();
    for seed in [1, 2] {
        let job = api(
            &base,
            "POST",
            "/v1/jobs",
            Some(json!({"dataset": ds, "options": {"epochs": 1, "seed": seed}, "register": "bishop"})),
        )["id"]
            .as_str()
            .unwrap()
            .to_string();
        models.push(server.finished(&job)["model"].as_str().unwrap().to_string());
    }
    api(
        &base,
        "PUT",
        "/v1/registry/bishop/aliases/production",
        Some(json!({"version": 1})),
    );
    // A read key of the default workspace, given to the page once.
    let key = common::serve::add_key(&store, &["--workspace", "default", "--scope", "read"]);
    c.goto(&format!("{base}/#/registry")).await.unwrap();
    until(
        &c,
        "the key dialog",
        "document.getElementById('token-dialog').open",
    )
    .await;
    enter_key(&c, &key).await;
    until(
        &c,
        "the registry's row",
        "(() => { const r = document.querySelector('tr[data-name=bishop]'); \
         return !!r && r.children[1].textContent === '2' && r.children[2].textContent === '2' \
         && r.querySelector('.aliases').textContent === 'production → 1'; })()",
    )
    .await;
    c.find(Locator::Css("tr[data-name=bishop] a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        &c,
        "the versions, newest first, with the alias on version 1",
        &format!(
            "(() => {{ const rows = [...document.querySelectorAll('table.versions tbody tr')]; \
             return rows.length === 2 && rows[0].dataset.version === '2' \
             && rows[1].querySelector('.aliases').textContent === 'production' \
             && rows[1].querySelector('a').getAttribute('href') === '#/models/{}'; }})()",
            models[0]
        ),
    )
    .await;
    shot(&c, "registry.png").await;
    // A version's model page opens from its link.
    c.find(Locator::Css("table.versions tbody tr:nth-child(2) a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        &c,
        "the model page",
        "!!document.getElementById('predict-form')",
    )
    .await;
    assert_eq!(errors(&c).await, json!([]));
    let problems = console_problems(&c, &["status of 401"]).await;
    assert!(problems.is_empty(), "browser console: {problems:#?}");
    c.close().await.unwrap();
}

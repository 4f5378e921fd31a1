//! The web explorer in a real browser: starts `weft serve`, then runs
//! `tests/ui/explorer.test.mjs` (Playwright driving Debian's Chromium), which
//! ingests a CRM workload over OTLP/HTTP and clicks through every page; and
//! starts `weft demo` for `tests/ui/demo.test.mjs`, which switches faults on
//! and off from the Demo page.
//!
//! Needs Node.js and Chromium. Without them the test says so and passes,
//! unless `WEFT_UI_TESTS=required` (set by `.ci/run`), where it fails.
//! Screenshots of each page land in `target/tmp/ui-screenshots/`, or in
//! `docs/screenshots/` (the README's) with `WEFT_UPDATE_SCREENSHOTS=1`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use std::time::Duration;

use support::{eventually_within, logged_addr, Process, Weft};

fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("WEFT_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
}

fn has_node() -> bool {
    Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

/// `npm ci` once, from the committed lock file.
fn install_playwright(dir: &Path) {
    if dir.join("node_modules/playwright-core").exists() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .expect("npm runs");
    assert!(status.success(), "npm ci in {} failed", dir.display());
}

/// Chromium's path when the browser tests can run; `None` (after saying
/// why) when they are skipped.
fn browser() -> Option<PathBuf> {
    let required = std::env::var("WEFT_UI_TESTS").is_ok_and(|v| v == "required");
    let (Some(chromium), true) = (chromium(), has_node()) else {
        assert!(
            !required,
            "WEFT_UI_TESTS=required but Chromium (/usr/bin/chromium or WEFT_CHROMIUM) or Node.js is missing"
        );
        eprintln!(
            "SKIPPED: the browser tests need Node.js and Chromium (apt-get install chromium); \
             .ci/run installs both and sets WEFT_UI_TESTS=required"
        );
        return None;
    };
    install_playwright(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui"));
    Some(chromium)
}

/// Runs one Playwright test file against a weft at `url`; `log` is the
/// server's log, shown when a test fails.
fn run_browser_tests(
    chromium: &Path,
    file: &str,
    env: &[(&str, String)],
    log: impl Fn() -> String,
) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tests = root.join("tests/ui");
    // Into the README's folder only when asked, so a test run leaves the tree clean.
    let screenshots = if std::env::var_os("WEFT_UPDATE_SCREENSHOTS").is_some() {
        root.join("docs/screenshots")
    } else {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots")
    };
    let output = Command::new("node")
        .args(["--test", "--test-reporter=spec", "--test-concurrency=1"])
        .arg(tests.join(file))
        .current_dir(&tests)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("WEFT_CHROMIUM", chromium)
        .env("WEFT_SCREENSHOTS", screenshots)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "browser tests failed:\n{stdout}\n{stderr}\nweft's log:\n{}",
        log()
    );
}

#[test]
fn explorer_pages_in_chromium() {
    let Some(chromium) = browser() else { return };
    let data = tempfile::tempdir().unwrap();
    // A short query limit ends the deliberately slow query of the cancel test.
    let weft = Weft::start(data.path(), &["--query-timeout", "5s"]);
    run_browser_tests(
        &chromium,
        "explorer.test.mjs",
        &[
            ("WEFT_URL", weft.api_url("")),
            ("WEFT_OTLP_HTTP", weft.http_url("")),
        ],
        || weft.log(),
    );
}

#[test]
fn demo_page_in_chromium() {
    let Some(chromium) = browser() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_weft"));
    command
        .arg("demo")
        .arg("--dir")
        .arg(dir.path())
        .args(["--rate", "20"]);
    for flag in [
        "--http-addr",
        "--otlp-grpc-addr",
        "--otlp-http-addr",
        "--gateway-addr",
        "--gateway-admin-addr",
        "--control-plane-addr",
    ] {
        command.args([flag, "127.0.0.1:0"]);
    }
    command.env("WEFT_LOG", "info");
    let (demo, line) = Process::spawn(command, "weft demo");
    let url = format!("http://{}", logged_addr(&line, "http"));
    eventually_within("the demo to be up", Duration::from_secs(90), || {
        demo.log().contains("weft demo running")
    });
    run_browser_tests(&chromium, "demo.test.mjs", &[("WEFT_URL", url)], || {
        demo.log()
    });
}

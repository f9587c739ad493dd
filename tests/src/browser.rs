//! A headless Chromium for end-to-end tests: `tests/browser/driver.mjs` (playwright-core, Debian's
//! Chromium) serves the examples' wasm pages (built by `scripts/web.sh build`) and opens them on
//! command; the pages publish their state, which arrives here as JSON.
//!
//! Needs node with `tests/browser/node_modules`, `/usr/bin/chromium` (or `$CHROMIUM`), and the
//! built pages in `$HUDDLE_WEB_DIR` (default `target/web`). `scripts/test.sh` and `.ci/run`
//! arrange all three; a test that finds one missing fails and says which.

use crate::apps::{run_until, Player, Types};
use bevy::prelude::*;
use bevy_huddle::HuddleConfig;
use huddle_examples::lobby::{LobbyGame, Pilot};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Where the built pages are.
pub fn web_dir() -> PathBuf {
    std::env::var_os("HUDDLE_WEB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/web"))
}

/// The running browser.
pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    events: mpsc::Receiver<Value>,
    statuses: HashMap<String, Value>,
    /// Uncaught page errors and console errors, as `name: text`.
    pub errors: Vec<String>,
    /// Console warnings, as `name: text`.
    pub warnings: Vec<String>,
    /// What each page's canvas showed when last asked ([`Browser::look_at_canvas`]).
    pub canvases: HashMap<String, Value>,
}

impl Browser {
    /// Starts the driver and the browser; panics with what is missing.
    pub fn start() -> Self {
        Self::launch(false)
    }

    /// A browser whose player refuses every camera and microphone request.
    pub fn refusing_media() -> Self {
        Self::launch_with(true, false)
    }

    /// A browser that renders WebGL2 (in software), for pages Bevy's renderer draws.
    pub fn with_webgl() -> Self {
        Self::launch_with(false, true)
    }

    fn launch(deny_media: bool) -> Self {
        Self::launch_with(deny_media, false)
    }

    fn launch_with(deny_media: bool, webgl: bool) -> Self {
        let here = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
        let web = web_dir();
        assert!(
            ["lobby.html", "box_game.html", "box_webgl.html"]
                .iter()
                .all(|page| web.join(page).exists()),
            "no built pages in {} (run scripts/web.sh build)",
            web.display()
        );
        assert!(
            here.join("node_modules/playwright-core").exists(),
            "no playwright-core (run npm ci in tests/browser)"
        );
        let mut child = Command::new("node")
            .arg(here.join("driver.mjs"))
            .arg(&web)
            .env("HUDDLE_DENY_MEDIA", if deny_media { "1" } else { "0" })
            .env("HUDDLE_WEBGL", if webgl { "1" } else { "0" })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs (apt-get install nodejs)");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        let browser = Self {
            child,
            stdin,
            events,
            statuses: HashMap::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
            canvases: HashMap::new(),
        };
        let ready = browser.events.recv_timeout(Duration::from_secs(60));
        assert!(
            ready.as_ref().is_ok_and(|v| v["ev"] == "ready"),
            "the browser started: {ready:?}"
        );
        browser
    }

    fn send(&mut self, command: Value) {
        let _ = writeln!(self.stdin, "{command}");
        let _ = self.stdin.flush();
    }

    /// Opens page `name` at `path` (with its query string).
    pub fn open(&mut self, name: &str, path: &str) {
        self.send(serde_json::json!({"cmd": "open", "name": name, "path": path}));
    }

    /// Presses `key` (a DOM key name, e.g. `Escape`) on page `name`.
    pub fn press(&mut self, name: &str, key: &str) {
        self.send(serde_json::json!({"cmd": "press", "name": name, "key": key}));
    }

    /// The player switches away from page `name`'s tab: the page hears it is hidden, then is
    /// frozen (see the driver).
    pub fn hide(&mut self, name: &str) {
        self.send(serde_json::json!({"cmd": "hide", "name": name}));
    }

    /// Asks what page `name`'s canvas shows (a screenshot's colours); the answer lands in
    /// [`Browser::canvases`].
    pub fn look_at_canvas(&mut self, name: &str) {
        self.canvases.remove(name);
        self.send(serde_json::json!({"cmd": "canvas", "name": name}));
    }

    /// The player comes back to page `name`'s tab.
    pub fn show(&mut self, name: &str) {
        self.send(serde_json::json!({"cmd": "show", "name": name}));
    }

    /// Closes page `name`: its peer leaves.
    pub fn close(&mut self, name: &str) {
        self.statuses.remove(name);
        self.send(serde_json::json!({"cmd": "close", "name": name}));
    }

    /// Takes in what the driver reported.
    pub fn pump(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            let name = event["name"].as_str().unwrap_or("?").to_string();
            match event["ev"].as_str() {
                Some("status") if !event["status"].is_null() => {
                    self.statuses.insert(name, event["status"].clone());
                }
                Some("pageerror") => self.errors.push(format!("{name}: {}", event["text"])),
                Some("console") if event["type"] == "error" => {
                    self.errors.push(format!("{name}: {}", event["text"]))
                }
                Some("console") => self.warnings.push(format!("{name}: {}", event["text"])),
                Some("canvas") => {
                    self.canvases.insert(name, event);
                }
                Some("closed") => {
                    self.statuses.remove(&name);
                }
                _ => {}
            }
        }
    }

    /// The last status of page `name` (`window.huddleStatus`).
    pub fn status(&self, name: &str) -> Option<&Value> {
        self.statuses.get(name)
    }

    /// Page `name`'s own id.
    pub fn id(&self, name: &str) -> Option<String> {
        self.status(name)?["me"].as_str().map(str::to_string)
    }

    /// Panics if a page reported an error.
    pub fn assert_no_errors(&self) {
        assert!(self.errors.is_empty(), "page errors: {:#?}", self.errors);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.send(serde_json::json!({"cmd": "quit"}));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the native players and the browser until `done` (or `limit`).
pub fn run_with_browser(
    players: &mut [Player],
    browser: &mut Browser,
    limit: Duration,
    mut done: impl FnMut(&[Player], &Browser) -> bool,
) -> bool {
    run_until(players, limit, |ps| {
        browser.pump();
        done(ps, browser)
    })
}

/// Opens page `name` at `path` and runs everyone until the page is in its lobby.
pub fn open_in_lobby(
    browser: &mut Browser,
    players: &mut [Player],
    name: &str,
    path: &str,
    limit: Duration,
) {
    browser.open(name, path);
    let joined = run_with_browser(players, browser, limit, |_, b| {
        b.status(name).is_some_and(|s| s["state"] == "InLobby")
    });
    assert!(
        joined,
        "page {name} is in the lobby: {:?}",
        browser.status(name)
    );
}

/// A native headless player of the lobby demo (the page's game), a bot at the keys.
pub fn lobby_player(url: &str) -> Player {
    let mut player = Player::join_with(url, Types::Nothing, HuddleConfig::room(url));
    player.app.add_plugins(LobbyGame { pilot: Pilot::Bot });
    player
}

/// The page path of an example joining `room`, a bot at the keys, with `extra` query parameters.
pub fn page(example: &str, room: &str, extra: &str) -> String {
    format!("/{example}.html?bot=1&room={room}{extra}")
}

/// A native player of the lobby demo with media: a bot at the keys, speaking a tone of `tone`
/// Hz and, with `camera`, showing a 320×240 test pattern (media bound to loopback, as the test
/// namespace wants).
pub fn media_lobby_player(url: &str, tone: f32, camera: bool) -> Player {
    use bevy_huddle::media::{CameraSource, LocalMedia, MicSource, SineWave, TestPattern};
    let mut config = HuddleConfig::room(url);
    config.media.enabled = true;
    config.media.bind = vec![std::net::SocketAddr::from(([127, 0, 0, 1], 0))];
    let mut player = Player::join_with(url, Types::Nothing, config);
    player.app.add_plugins(LobbyGame { pilot: Pilot::Bot });
    let mut local = player.app.world_mut().resource_mut::<LocalMedia>();
    local.start_microphone(MicSource::SineWave(SineWave::new(tone, 0.5)));
    if camera {
        local.start_camera(CameraSource::TestPattern(TestPattern::new(320, 240, 30)));
    }
    player
}

/// The lobby page with media on, speaking a tone of `tone` Hz and, with `camera`, showing a
/// test pattern.
pub fn media_page(room: &str, tone: f32, camera: bool) -> String {
    let pattern = if camera { "&pattern=1" } else { "" };
    page("lobby", room, &format!("&media=1&voice={tone}{pattern}"))
}

/// What a page's status says it receives of `peer` (`status.media.peers[]`).
pub fn page_media<'a>(status: &'a Value, peer: &str) -> Option<&'a Value> {
    status["media"]["peers"]
        .as_array()?
        .iter()
        .find(|p| p["id"] == peer)
}

/// The page hears `peer`'s tone of `hz` (its analyser's peak within ±2 Hz, 20 dB over the rest).
pub fn page_hears(status: &Value, peer: &str, hz: f32) -> bool {
    page_media(status, peer).is_some_and(|p| {
        let near = p["hz"]
            .as_f64()
            .is_some_and(|h| (h - f64::from(hz)).abs() <= 2.0);
        near && p["margin_db"].as_f64().is_some_and(|m| m >= 20.0)
    })
}

/// The page decoded at least `frames` of `peer`'s camera (the browser's count) and its image
/// shows a test pattern index.
pub fn page_sees(status: &Value, peer: &str, frames: u64) -> bool {
    page_media(status, peer).is_some_and(|p| {
        p["frames_decoded"].as_u64().is_some_and(|f| f >= frames) && p["index"].is_u64()
    })
}

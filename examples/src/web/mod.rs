//! The examples in a browser (wasm32): the page's query string configures the game, a 2D canvas
//! shows it, the arrow keys steer, and a status line shows the connection state, the peers, the
//! host and the RTT. The same status is published as JSON in `window.huddleStatus` for scripts
//! (the browser tests read it).
//!
//! Query parameters: `room` (the room URL; default `ws://<page host>:3536/<example>`), `bot=1`
//! (a bot steers), `players=N` and `frames=N` (box game: match size, and the frame whose
//! checksum to report), `ice` (STUN/TURN servers, comma-separated: `stun:host:port`,
//! `turn:user:credential@host:port`); the lobby's voice and camera: `media=1`, `voice=HZ`, `pattern=1` (see
//! [`media`]).

use crate::box_game::{BoxBody, BoxGame, BoxInput, Steering, ARENA};
use crate::lobby::{short, LobbyGame, Pilot, Position, Squares};
use bevy::prelude::*;
use bevy_huddle::prelude::*;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

pub mod media;
mod status;
use status::{keep_errors, publish_box_game, publish_lobby, PageErrors};

/// What the page's query string asks for.
#[derive(Debug, Clone)]
pub struct PageArgs {
    /// The room URL.
    pub room: String,
    /// A bot steers.
    pub bot: bool,
    /// Players in a match (box game).
    pub players: usize,
    /// Report the checksum at this frame (box game).
    pub frames: Option<i32>,
    /// Voice and camera (lobby).
    pub media: bool,
    /// Speak a tone of this many Hz from the start (lobby, with media).
    pub voice: Option<f32>,
    /// Show a test pattern as the camera from the start (lobby, with media).
    pub pattern: bool,
    /// Start the browser's microphone at once (`mic=1`: the default one; else a device id).
    pub mic: Option<String>,
    /// STUN/TURN servers, one line each.
    pub ice: Vec<String>,
}

impl PageArgs {
    /// Reads the page's query string; `example` names the default room.
    pub fn from_page(example: &str) -> Self {
        let location = web_sys::window().map(|w| w.location());
        let search = location
            .as_ref()
            .and_then(|l| l.search().ok())
            .unwrap_or_default();
        let params = web_sys::UrlSearchParams::new_with_str(&search).ok();
        let get = |k: &str| params.as_ref().and_then(|p| p.get(k));
        let host = location
            .and_then(|l| l.hostname().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "127.0.0.1".into());
        Self {
            room: get("room").unwrap_or_else(|| format!("ws://{host}:3536/{example}")),
            bot: get("bot").is_some_and(|b| b == "1"),
            players: get("players").and_then(|p| p.parse().ok()).unwrap_or(2),
            frames: get("frames").and_then(|f| f.parse().ok()),
            media: get("media").is_some_and(|m| m == "1"),
            voice: get("voice").and_then(|v| v.parse().ok()),
            pattern: get("pattern").is_some_and(|p| p == "1"),
            mic: get("mic"),
            ice: get("ice")
                .map(|i| i.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
        }
    }

    fn pilot(&self) -> Pilot {
        if self.bot {
            Pilot::Bot
        } else {
            Pilot::Player
        }
    }
}

/// Keys held down, and the last presses not yet taken (a few at most), filled by DOM listeners.
#[derive(Default)]
struct Keys(BTreeSet<String>, Vec<String>);

/// The DOM side: canvas, status element, keys.
pub(super) struct Dom {
    canvas: web_sys::CanvasRenderingContext2d,
    status: web_sys::Element,
    keys: Rc<RefCell<Keys>>,
}

fn dom() -> Option<Dom> {
    let document = web_sys::window()?.document()?;
    let canvas: web_sys::HtmlCanvasElement = document.get_element_by_id("game")?.dyn_into().ok()?;
    let context = canvas.get_context("2d").ok()??.dyn_into().ok()?;
    let status = document.get_element_by_id("status")?;
    let keys = Rc::new(RefCell::new(Keys::default()));
    for (event, down) in [("keydown", true), ("keyup", false)] {
        let keys = keys.clone();
        let listener =
            Closure::<dyn FnMut(web_sys::KeyboardEvent)>::new(move |e: web_sys::KeyboardEvent| {
                if e.key().starts_with("Arrow") {
                    e.prevent_default();
                }
                let mut keys = keys.borrow_mut();
                if down && keys.1.len() < 8 {
                    keys.1.push(e.key());
                }
                if down {
                    keys.0.insert(e.key());
                } else {
                    keys.0.remove(&e.key());
                }
            });
        document
            .add_event_listener_with_callback(event, listener.as_ref().unchecked_ref())
            .ok()?;
        // The page lives as long as the game: the listener too.
        listener.forget();
    }
    Some(Dom {
        canvas: context,
        status,
        keys,
    })
}

/// The arrow keys held, as box-game bits.
fn arrows(keys: &Keys) -> BoxInput {
    let mut bits = 0;
    for (key, bit) in [
        ("ArrowLeft", BoxInput::LEFT),
        ("ArrowRight", BoxInput::RIGHT),
        ("ArrowUp", BoxInput::UP),
        ("ArrowDown", BoxInput::DOWN),
    ] {
        if keys.0.contains(key) {
            bits |= bit;
        }
    }
    BoxInput(bits)
}

/// The page's settings: its room, and its ICE servers (`?ice=`; a bad one is logged).
fn config(args: &PageArgs) -> HuddleConfig {
    let mut config = HuddleConfig::room(&args.room);
    match crate::set_ice(&args.ice) {
        Ok(()) => config.ice_servers = crate::ice(),
        Err(e) => web_sys::console::error_1(&e.to_string().into()),
    }
    config
}

/// [`config`] for the box game: a mesh.
fn box_config(args: &PageArgs) -> HuddleConfig {
    let mut config = config(args);
    config.topology = Some(Topology::Mesh);
    config
}

fn app(config: HuddleConfig) -> App {
    let mut app = App::new();
    app.add_plugins(crate::minimal_plugins_60hz())
        .add_plugins(bevy::log::LogPlugin {
            filter: "info".into(),
            ..default()
        })
        .add_plugins(HuddlePlugin::new(config))
        .init_resource::<PageErrors>()
        .add_systems(Update, keep_errors);
    app
}

/// The lobby demo in the page.
pub fn run_lobby() {
    let args = PageArgs::from_page("lobby");
    let mut config = config(&args);
    config.media.enabled = args.media;
    let mut app = app(config);
    // Remote cameras arrive as images.
    app.add_plugins(bevy::asset::AssetPlugin::default())
        .init_asset::<Image>();
    app.add_plugins(LobbyGame {
        pilot: args.pilot(),
    });
    if let Some(dom) = dom() {
        app.insert_non_send(dom)
            .add_plugins(media::PageMedia {
                voice: args.voice,
                pattern: args.pattern,
                mic: args.mic.clone(),
            })
            .add_systems(Update, (steer_square, draw_lobby, publish_lobby).chain());
    }
    app.run();
}

/// The box game in the page.
pub fn run_box_game() {
    let args = PageArgs::from_page("boxes");
    let mut app = app(box_config(&args));
    app.add_plugins(BoxGame::new(args.pilot(), args.players))
        .insert_resource(Target(args.frames));
    if let Some(dom) = dom() {
        app.insert_non_send(dom).add_systems(
            Update,
            (steer_box, match_keys, draw_boxes, publish_box_game).chain(),
        );
    }
    app.run();
}

/// The box game drawn by Bevy's renderer (WebGL2) on the page's `#bevy` canvas: the native
/// window's systems ([`BoxWindow`](crate::box_window::BoxWindow)), the same query parameters as
/// the 2D page, the same `window.huddleStatus`.
#[cfg(feature = "webgl")]
pub fn run_box_game_webgl() {
    let args = PageArgs::from_page("boxes");
    let window = Window {
        canvas: Some("#bevy".into()),
        fit_canvas_to_parent: true,
        // The arrow keys steer the box, not the page's scroll.
        prevent_default_event_handling: true,
        ..default()
    };
    let mut game = BoxGame::new(args.pilot(), args.players);
    // WebGL2 compiles the shaders on the page's thread when the first frames draw: the page
    // stalls for seconds then (more on a software renderer), and hears nobody meanwhile. Wait
    // that long before counting the other player gone.
    game.rollback.disconnect_timeout = std::time::Duration::from_secs(15);
    App::new()
        .add_plugins(
            DefaultPlugins
                .set(WindowPlugin {
                    primary_window: Some(window),
                    ..default()
                })
                .set(bevy::log::LogPlugin {
                    filter: "info".into(),
                    ..default()
                }),
        )
        .add_plugins(HuddlePlugin::new(box_config(&args)))
        .init_resource::<PageErrors>()
        .add_plugins(game)
        .add_plugins(crate::box_window::BoxWindow)
        .insert_resource(Target(args.frames))
        .add_systems(Update, (keep_errors, publish_box_game))
        .run();
}

#[derive(Resource)]
pub(super) struct Target(pub(super) Option<i32>);

fn steer_square(
    dom: NonSend<Dom>,
    pilot: Res<Pilot>,
    roster: Res<Roster>,
    time: Res<Time>,
    mut squares: ResMut<Squares>,
) {
    let (Pilot::Player, Some(me)) = (*pilot, roster.me) else {
        return;
    };
    let b = arrows(&dom.keys.borrow()).0;
    let dx = f32::from(u8::from(b & BoxInput::RIGHT != 0))
        - f32::from(u8::from(b & BoxInput::LEFT != 0));
    let dy =
        f32::from(u8::from(b & BoxInput::UP != 0)) - f32::from(u8::from(b & BoxInput::DOWN != 0));
    let pos = squares.0.entry(me).or_insert(Position { x: 0.0, y: 0.0 });
    pos.x += dx * 250.0 * time.delta_secs();
    pos.y += dy * 250.0 * time.delta_secs();
}

fn steer_box(dom: NonSend<Dom>, mut steering: ResMut<Steering>) {
    steering.0 = arrows(&dom.keys.borrow());
}

/// Escape leaves the match cleanly (the other players play on without us); J, while watching,
/// asks to play (a drop-in: a new seat at the next resync).
fn match_keys(
    dom: NonSend<Dom>,
    mut leave: MessageWriter<LeaveRollback>,
    mut join: MessageWriter<JoinRollback>,
    mut asked: Local<bool>,
) {
    let pressed = std::mem::take(&mut dom.keys.borrow_mut().1);
    if !*asked && pressed.iter().any(|k| k == "Escape") {
        leave.write(LeaveRollback);
        *asked = true;
    }
    if pressed.iter().any(|k| k.eq_ignore_ascii_case("j")) {
        join.write(JoinRollback::default());
    }
}

/// A stable color per peer.
fn color(id: PeerId) -> String {
    format!("hsl({}, 70%, 55%)", id.0.as_u128() % 360)
}

fn clear(ctx: &web_sys::CanvasRenderingContext2d) -> (f64, f64) {
    let canvas = ctx.canvas();
    let (w, h) = canvas
        .map(|c| (f64::from(c.width()), f64::from(c.height())))
        .unwrap_or((640.0, 480.0));
    ctx.set_fill_style_str("#1e1e28");
    ctx.fill_rect(0.0, 0.0, w, h);
    (w, h)
}

fn draw_lobby(dom: NonSend<Dom>, squares: Res<Squares>, roster: Res<Roster>) {
    let ctx = &dom.canvas;
    let (w, h) = clear(ctx);
    for (id, pos) in &squares.0 {
        let side = if roster.host == Some(*id) { 60.0 } else { 40.0 };
        ctx.set_fill_style_str(&color(*id));
        let (x, y) = (w / 2.0 + f64::from(pos.x), h / 2.0 - f64::from(pos.y));
        ctx.fill_rect(x - side / 2.0, y - side / 2.0, side, side);
        ctx.set_fill_style_str("#ddd");
        let _ = ctx.fill_text(&short(*id), x - side / 2.0, y - side / 2.0 - 4.0);
    }
}

const BOX_COLORS: [&str; 4] = ["#e64d4d", "#4d99f2", "#59d966", "#f2cc4d"];

fn draw_boxes(dom: NonSend<Dom>, boxes: Query<&BoxBody>) {
    let ctx = &dom.canvas;
    let (w, h) = clear(ctx);
    let scale = (w.min(h) / 2.0 - 30.0) / f64::from(ARENA);
    for b in &boxes {
        ctx.set_fill_style_str(BOX_COLORS[b.handle as usize % BOX_COLORS.len()]);
        let (x, y) = (
            w / 2.0 + f64::from(b.x) * scale,
            h / 2.0 - f64::from(b.y) * scale,
        );
        ctx.fill_rect(x - 15.0, y - 15.0, 30.0, 30.0);
    }
}

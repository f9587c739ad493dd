//! The box game: a rollback match (GGRS through huddle). With no arguments it starts a signaling
//! server in-process and a bot opponent, so one command shows a match:
//!
//! ```sh
//! cargo run -p huddle_examples --bin box_game --features window       # arrows move your box
//! cargo run -p huddle_examples --bin box_game -- --headless --frames 600   # prints the checksum
//! cargo run -p huddle_examples --bin box_game -- --room ws://127.0.0.1:3536/boxes --headless
//! cargo run -p huddle_examples --bin box_game -- --synctest --frames 600
//! ```
//!
//! In a browser (wasm32) the same binary is the page's game: see `scripts/web.sh` and README
//! ("Play in the browser").

#[cfg(not(target_arch = "wasm32"))]
mod native;

#[cfg(not(target_arch = "wasm32"))]
fn main() -> bevy::app::AppExit {
    native::main()
}

#[cfg(target_arch = "wasm32")]
fn main() {
    huddle_examples::web::run_box_game();
}

//! The lobby demo. With no arguments it starts a signaling server in-process and a bot player, so
//! one command shows a real session:
//!
//! ```sh
//! cargo run -p huddle_examples --bin lobby --features window     # a window: arrows move, 1-3 chat
//! cargo run -p huddle_examples --bin lobby -- --headless --frames 600
//! cargo run -p huddle_examples --bin lobby -- --room ws://127.0.0.1:3536/lobby --headless
//! cargo run -p huddle_examples --bin lobby -- --browse ws://127.0.0.1:3536 --headless  # pick a room
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
    huddle_examples::web::run_lobby();
}

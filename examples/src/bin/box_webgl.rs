//! The box game in a browser, drawn by Bevy's renderer (WebGL2): what a Bevy game ships to the
//! web, with huddle inside. `scripts/web.sh build` builds it to `box_webgl.html`, which takes the
//! same query parameters as `box_game.html` (`room`, `bot`, `players`, `frames`, `ice`).

#[cfg(target_arch = "wasm32")]
fn main() {
    huddle_examples::web::run_box_game_webgl();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!(
        "box_webgl is the box game's browser build (scripts/web.sh build); natively run \
         `cargo run -p huddle_examples --bin box_game --features window`"
    );
}

//! Whether the game is in the background (a browser tab the player switched away from, a
//! minimised window), so the others keep its place in a match while it is away.
//!
//! A browser throttles a hidden tab's timers to about once a second (or freezes the page), so a
//! game there falls silent. The game says so with [`Backgrounded`]; in a browser the plugin
//! writes it by itself from the page's `visibilitychange`. The rollback plugin tells the other
//! players, which then wait `RollbackSettings::away_timeout` (30 s) for it instead of
//! `disconnect_timeout` (2 s) before counting it gone; meanwhile the match waits for it (GGRS
//! cannot run ahead of a player's inputs by more than the prediction window).

use bevy::prelude::*;

/// The game went to the background (`true`: a hidden tab, a minimised window) or came back
/// (`false`). Written by the plugin in a browser; a native game writes it itself.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backgrounded(pub bool);

/// Adds [`Backgrounded`], and in a browser the page's visibility as its source.
pub(crate) fn register(app: &mut App) {
    app.add_message::<Backgrounded>();
    #[cfg(target_arch = "wasm32")]
    web::register(app);
}

#[cfg(target_arch = "wasm32")]
mod web {
    use super::Backgrounded;
    use bevy::prelude::*;
    use std::cell::RefCell;
    use std::rc::Rc;
    use wasm_bindgen::prelude::*;
    use wasm_bindgen::JsCast;

    /// The page's visibility changes since the last frame (at most a few kept).
    #[derive(Default)]
    struct Changes(Rc<RefCell<Vec<bool>>>);

    /// The most changes kept between two frames (a hidden page may run none for a while).
    const MAX_CHANGES: usize = 8;

    fn hidden(document: &web_sys::Document) -> bool {
        document.visibility_state() == web_sys::VisibilityState::Hidden
    }

    pub(super) fn register(app: &mut App) {
        let changes = Changes::default();
        let Some(document) = web_sys::window().and_then(|w| w.document()) else {
            return;
        };
        let seen = changes.0.clone();
        let doc = document.clone();
        let listener = Closure::<dyn FnMut()>::new(move || {
            let mut seen = seen.borrow_mut();
            if seen.len() >= MAX_CHANGES {
                seen.remove(0);
            }
            seen.push(hidden(&doc));
        });
        if document
            .add_event_listener_with_callback("visibilitychange", listener.as_ref().unchecked_ref())
            .is_err()
        {
            return;
        }
        // The page lives as long as the game: the listener too.
        listener.forget();
        app.insert_non_send(changes)
            .add_systems(First, report_visibility);
    }

    fn report_visibility(changes: NonSend<Changes>, mut out: MessageWriter<Backgrounded>) {
        for hidden in changes.0.borrow_mut().drain(..) {
            out.write(Backgrounded(hidden));
        }
    }
}

//! Which microphone and which camera a track takes: natively a device of this machine
//! (feature `media-devices`: `microphones()` and `cameras()` list them), in the browser what
//! `getUserMedia` gives (the player may pick in the browser's prompt).

/// A microphone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MicDevice {
    /// Natively its name as `microphones()` lists it, in the browser its `deviceId`; `None`: the
    /// default input.
    pub name: Option<String>,
}

/// A camera.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraDevice {
    /// Natively its place in `cameras()`; unused in the browser (the player picks).
    pub index: u32,
    /// The size asked for (the camera's nearest is taken).
    pub width: u32,
    /// The height asked for.
    pub height: u32,
    /// The frame rate asked for.
    pub fps: u32,
}

impl CameraDevice {
    /// Camera `index` at 640×480, 30 fps (or what it has closest).
    pub fn new(index: u32) -> Self {
        Self {
            index,
            width: 640,
            height: 480,
            fps: 30,
        }
    }
}

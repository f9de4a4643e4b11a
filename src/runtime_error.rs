//! A Workers runtime error as text (wasm only), as `worker::Error`'s
//! `Display` writes it for the errors the runtime throws, without linking
//! that `Display` and its chain of error types (~2 KB of wasm gzip).

use wasm_bindgen::JsValue;

/// A `worker::Error` as text: `Name: message` (`Name [code]: message`) for
/// one the runtime threw, as its `Display` writes it, without linking that.
pub(crate) fn error_text(e: &worker::Error) -> String {
    match e {
        worker::Error::JsError(text)
        | worker::Error::RustError(text)
        | worker::Error::BindingError(text) => text.clone(),
        worker::Error::UnknownJsError {
            name,
            message,
            code,
            ..
        } => {
            let name = name.as_deref().unwrap_or("Error");
            match code {
                Some(code) => format!("{name} [{code}]: {message}"),
                None => format!("{name}: {message}"),
            }
        }
        worker::Error::Internal(_) => "unrecognized JavaScript value".to_owned(),
        _ => "Workers runtime error".to_owned(),
    }
}

/// A value the runtime threw, as text (see [`error_text`]).
pub(crate) fn js_error_text(e: JsValue) -> String {
    error_text(&worker::Error::from(e))
}

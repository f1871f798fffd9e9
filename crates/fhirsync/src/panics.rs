//! Panics the libraries below catch themselves, kept out of the program's output.

/// delta-rs catches one panic of object_store by design: the abort of an upload whose finish
/// failed (a full disk, a store that refused the last part), which object_store answers with
/// `panic!("Already shut down")`; the failure itself comes back as an error. The default hook
/// would still print that caught panic with its backtrace above the error: it goes to the
/// debug log instead. Every other panic goes to the hook installed before (the default one
/// prints it). A program calls this once, at its start.
pub fn quiet_caught_library_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
        let at_abort = info.location().is_some_and(|l| {
            l.file().contains("object_store") && l.file().ends_with("buffered.rs")
        });
        if at_abort && message == Some("Already shut down") {
            tracing::debug!("object_store refused to abort an upload whose finish failed");
            return;
        }
        default(info);
    }));
}

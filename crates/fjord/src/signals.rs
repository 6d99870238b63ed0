//! Ctrl-C (SIGINT) and SIGTERM as a flag, so that `produce` and `consume` finish their work (deliver what
//! was read, commit what was printed, print their summary) instead of dying mid-way. A second signal ends
//! the process at once, for a user who does not want to wait for the broker.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

/// 128 + the number of the first signal received (130 for SIGINT, 143 for SIGTERM), 0 before any.
static EXIT_CODE: AtomicU8 = AtomicU8::new(0);

/// The exit status a command stopped by a signal ends with (128 + the signal, as a shell reports it).
pub fn exit_code() -> u8 {
    match EXIT_CODE.load(Ordering::Relaxed) {
        0 => 130,
        c => c,
    }
}

use crate::client::CliError;

/// Starts a thread that sets the returned flag on the first SIGINT or SIGTERM and exits the process with
/// 128 + the signal on the second.
pub fn watch() -> Result<Arc<AtomicBool>, CliError> {
    use tokio::signal::unix::{signal, SignalKind};
    let flag = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(format!("cannot start the async runtime: {e}")))?;
    // Registered here, before the command starts its work, so that an early signal is not missed.
    let (mut int, mut term) = rt
        .block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
            ))
        })
        .map_err(|e| CliError::failure(format!("cannot watch for signals: {e}")))?;
    let set = flag.clone();
    std::thread::spawn(move || {
        rt.block_on(async {
            let mut seen = 0;
            loop {
                let code = tokio::select! {
                    _ = int.recv() => 130,
                    _ = term.recv() => 143,
                };
                seen += 1;
                if seen > 1 {
                    std::process::exit(code);
                }
                EXIT_CODE.store(code as u8, Ordering::Relaxed);
                set.store(true, Ordering::Relaxed);
            }
        })
    });
    Ok(flag)
}
